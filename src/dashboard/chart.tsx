import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartSeries {
  label: string;
  color: string;
  values: (number | null)[];
  /** Draw as bars instead of a line. */
  bars?: boolean;
  /** How the legend writes a value. */
  format?: (value: number | null) => string;
}

export interface ChartProps {
  title: string;
  testId: string;
  /** Unix seconds of each point. */
  times: number[];
  series: ChartSeries[];
  /** How the y axis writes its ticks. */
  axis?: (value: number) => string;
  /** The y range starts at zero; with max, it ends there too (e.g. 1 for a rate). */
  max?: number;
  height?: number;
}

/** A uPlot time chart that follows its box's width and its data. */
export function Chart({ title, testId, times, series, axis, max, height = 220 }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const bars = uPlot.paths.bars?.({ size: [0.6, 40] });
    const halfStep = times.length > 1 ? (times[1]! - times[0]!) / 2 : 1800;
    const options: uPlot.Options = {
      width: Math.max(200, element.clientWidth),
      height,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      // Half a step of room at both ends, so that the first and last bars are whole.
      scales: { x: { time: true, range: (_plot, min, max) => [min - halfStep, max + halfStep] }, y: { range: (_plot, _min, dataMax) => [0, max ?? (dataMax > 0 ? dataMax * 1.15 : 1)] } },
      axes: [
        { stroke: '#8b93a7', grid: { stroke: '#2a3142', width: 1 }, ticks: { stroke: '#2a3142' } },
        { stroke: '#8b93a7', grid: { stroke: '#2a3142', width: 1 }, ticks: { stroke: '#2a3142' }, size: 60, ...(axis ? { values: (_plot: uPlot, ticks: number[]) => ticks.map(axis) } : {}) },
      ],
      series: [
        { label: 'Time' },
        ...series.map((one) => ({
          label: one.label,
          stroke: one.color,
          width: 2,
          spanGaps: false,
          ...(one.bars && bars ? { paths: bars, fill: `${one.color}99`, points: { show: false } } : { points: { show: true, size: 5, fill: one.color } }),
          ...(one.format ? { value: (_plot: uPlot, value: number | null) => one.format!(value) } : {}),
        })),
      ],
    };
    const plot = new uPlot(options, [times, ...series.map((one) => one.values)] as uPlot.AlignedData, element);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(200, element.clientWidth), height }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [times, series, axis, max, height]);
  return (
    <section class="panel chart" data-testid={testId}>
      <h2>{title}</h2>
      <div ref={box} class="chart-box" />
    </section>
  );
}
