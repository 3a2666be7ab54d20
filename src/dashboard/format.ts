// How the dashboard writes numbers. Pure functions: the page uses them, and so does its test, to
// compare what the page shows with what the API answers.
import { sumUsd } from '../money.ts';

/** A money amount as the API sends it: a decimal string (the Decimal scalar, e.g. "0.0002109"). Null: not priced. */
export type Money = string | null | undefined;

/** The amount as a number, for charts only (never summed or shown); null when unpriced or unreadable. */
export function moneyValue(value: Money): number | null {
  if (value === null || value === undefined || value === '') return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

/** The amount as shown: the decimal string as the server wrote it (it is exact); "—" when unpriced. */
export function formatMoney(value: Money): string {
  return value === null || value === undefined || value === '' ? '—' : `$${value}`;
}

/** The exact sum of amounts (null when all are unpriced), through the server's own decimal arithmetic. */
export function sumMoney(values: Money[]): string | null {
  return sumUsd(values.map((value) => (value === undefined || value === '' ? null : value)));
}

/** A count with thousands separators. */
export function formatCount(value: number): string {
  return value.toLocaleString('en-US');
}

/** A ratio (0 to 1) as a percentage with one decimal; "—" when null (no call used the cache). */
export function formatRate(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return `${(value * 100).toFixed(1)}%`;
}

/** Milliseconds, rounded: "12 ms", "1.35 s". */
export function formatMs(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  if (value === 0) return '0 ms';
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
}

/** A timestamp in the viewer's time zone, to the second. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  // Swedish writes dates as ISO 8601 does: 2026-12-02 05:25:40.
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString('sv-SE');
}

/** A UTC day bucket ("2026-12-02T00:00:00.000Z") as its date. */
export function formatDay(iso: string | null | undefined): string {
  return iso ? iso.slice(0, 10) : '—';
}

/** Only the time of day of a timestamp, in the viewer's time zone. */
export function formatClock(iso: string | null | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString('sv-SE');
}
