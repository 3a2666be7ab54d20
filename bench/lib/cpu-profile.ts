/** The parts of a V8 .cpuprofile (as `node --cpu-prof` writes it) that a summary needs. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  /** Microseconds on the monotonic clock (the same as process.hrtime's on Linux). */
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  milliseconds: number;
}

export interface ProfileSummary {
  /** Sampled time within the window, idle excluded. */
  busyMs: number;
  idleMs: number;
  /** Self time per function (name, file:line). */
  functions: ProfileEntry[];
  /** Self time per area: a package, a file of src/, node internals, GC. */
  areasSelf: ProfileEntry[];
  /** Time with the area anywhere on the stack (an area counted once per sample). */
  areasTotal: ProfileEntry[];
  /** Time with the function anywhere on the stack, for functions of src/ only. */
  sourceTotal: ProfileEntry[];
  /** Each sample charged to the nearest subsystem on its stack (see `subsystemOf`). */
  subsystems: ProfileEntry[];
}

/**
 * The subsystem a frame belongs to, or null for frames that say nothing (node internals, natives).
 * A sample is charged to the first subsystem found walking from the leaf towards the root, so that
 * a socket write issued by pg counts as database work and one issued by Yoga as HTTP serving.
 */
export function subsystemOf(area: string, url: string): string | null {
  if (/^pkg:(@prisma\/|prisma$|pg$|pg-pool$|pg-protocol$|pg-types$|postgres-)/.test(area) || area === 'wasm') return 'database: Prisma, adapter-pg, pg';
  if (area === 'pkg:openai' || url.startsWith('node:internal/deps/undici')) return 'upstream client: openai SDK, fetch (undici)';
  if (area === 'pkg:js-tiktoken' || area === 'src/llm/tokens.ts') return 'token counting: js-tiktoken';
  if (/^pkg:(graphql$|@graphql-tools\/|@envelop\/|@pothos\/|graphql-scalars$)/.test(area)) return 'GraphQL: parse, validate, execute';
  if (/^pkg:(graphql-yoga$|@whatwg-node\/|@graphql-yoga\/|urlpattern-polyfill$)/.test(area)) return 'HTTP serving: Yoga, whatwg-node';
  if (area === 'src/llm/history.ts') return 'src: history writer';
  if (area.startsWith('src/')) return `src: other (${area.slice(4)})`;
  if (area.startsWith('pkg:')) return area;
  if (area === '(garbage collector)' || area === '(program)') return area;
  return null;
}

/** Where a frame belongs: `pkg:<name>` for node_modules, `src/<file>`, `node:<internal>`, or V8's own (GC, program). */
export function areaOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('wasm://')) return 'wasm';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const parts = url.slice(modules + '/node_modules/'.length).split('/');
    return `pkg:${parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]}`;
  }
  const source = url.indexOf('/src/');
  if (source >= 0) return url.slice(source + 1).replace(/\?.*$/, '');
  if (url.startsWith('node:')) return 'node:internals';
  return url.replace(/^file:\/\//, '');
}

function top(map: Map<string, number>, limit: number): ProfileEntry[] {
  return [...map.entries()]
    .map(([name, microseconds]) => ({ name, milliseconds: microseconds / 1000 }))
    .sort((a, b) => b.milliseconds - a.milliseconds)
    .slice(0, limit);
}

/** Summarises the samples taken between `fromMicros` and `toMicros` (monotonic clock; the whole profile by default). */
export function summariseProfile(profile: CpuProfile, window: { fromMicros?: number; toMicros?: number } = {}, limit = 25): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const frameName = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const area = areaOf(url, functionName);
    return `${functionName || '(anonymous)'} ${area.startsWith('(') ? '' : `${area}:${lineNumber + 1}`}`.trim();
  };
  const areaOfNode = (id: number) => {
    const { url, functionName } = byId.get(id)!.callFrame;
    return areaOf(url, functionName);
  };

  const functions = new Map<string, number>();
  const areasSelf = new Map<string, number>();
  const areasTotal = new Map<string, number>();
  const sourceTotal = new Map<string, number>();
  const subsystems = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  const from = window.fromMicros ?? -Infinity;
  const to = window.toMicros ?? Infinity;
  let time = profile.startTime;
  for (let index = 0; index < profile.samples.length; index++) {
    time += profile.timeDeltas[index] ?? 0;
    if (time < from || time > to) continue;
    // A sample stands for the time until the next one.
    const weight = profile.timeDeltas[index + 1] ?? 0;
    const id = profile.samples[index]!;
    const self = areaOfNode(id);
    if (self === '(idle)') {
      idle += weight;
      continue;
    }
    busy += weight;
    functions.set(frameName(id), (functions.get(frameName(id)) ?? 0) + weight);
    areasSelf.set(self, (areasSelf.get(self) ?? 0) + weight);
    const seenAreas = new Set<string>();
    const seenSource = new Set<string>();
    let subsystem: string | null = null;
    for (let node: number | undefined = id; node !== undefined; node = parentOf.get(node)) {
      const area = areaOfNode(node);
      if (area === '(root)') continue;
      subsystem ??= subsystemOf(area, byId.get(node)!.callFrame.url);
      // Every stack runs under node internals and natives: they would top this table and say nothing.
      if (area !== 'node:internals' && area !== '(native)') seenAreas.add(area);
      if (area.startsWith('src/')) seenSource.add(frameName(node));
    }
    subsystem ??= `other: ${self}`;
    subsystems.set(subsystem, (subsystems.get(subsystem) ?? 0) + weight);
    for (const area of seenAreas) areasTotal.set(area, (areasTotal.get(area) ?? 0) + weight);
    for (const name of seenSource) sourceTotal.set(name, (sourceTotal.get(name) ?? 0) + weight);
  }
  return {
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    functions: top(functions, limit),
    areasSelf: top(areasSelf, limit),
    areasTotal: top(areasTotal, limit),
    sourceTotal: top(sourceTotal, limit),
    subsystems: top(subsystems, limit),
  };
}

/** The summary as Markdown tables, with milliseconds per request when `requests` is given. */
export function renderSummary(summary: ProfileSummary, requests: number): string {
  const table = (title: string, entries: ProfileEntry[]) => [
    `### ${title}`,
    '',
    '| | ms | share | ms/req |',
    '|---|--:|--:|--:|',
    ...entries.map(
      (entry) =>
        `| \`${entry.name.replace(/\|/g, '\\|')}\` | ${entry.milliseconds.toFixed(0)} | ${((100 * entry.milliseconds) / summary.busyMs).toFixed(1)}% | ${(entry.milliseconds / requests).toFixed(4)} |`,
    ),
    '',
  ];
  return [
    `Busy ${summary.busyMs.toFixed(0)} ms of samples (idle ${summary.idleMs.toFixed(0)} ms) over ${requests} requests: ${(summary.busyMs / requests).toFixed(3)} ms/req on the main thread.`,
    '',
    ...table('By subsystem (each sample charged to the nearest one on its stack)', summary.subsystems),
    ...table('Self time by function', summary.functions),
    ...table('Self time by area', summary.areasSelf),
    ...table('Total time by area (on the stack; node internals and natives left out)', summary.areasTotal),
    ...table('Total time by function of src/ (on the stack)', summary.sourceTotal),
  ].join('\n');
}
