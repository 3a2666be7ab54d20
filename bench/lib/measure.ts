import { createHash } from 'node:crypto';
import type pg from 'pg';
import { backendPids } from './database.ts';
import { runLoad, type LoadResult, type LoadTarget } from './load.ts';
import { cpuTimeOrZero, machineBusyMs } from './processes.ts';

const referenceDocument = {
  model: 'gpt-4o-mini',
  messages: Array.from({ length: 8 }, (_, index) => ({ role: 'user', content: `message ${index} `.repeat(20) })),
};

/**
 * CPU milliseconds of a fixed piece of work (JSON and SHA-256) in the bench's process: a yardstick
 * of the machine's speed at that moment. On a shared host it varies, and CPU per request with it.
 */
export function referenceWorkMs(): number {
  const started = process.cpuUsage();
  let sink = 0;
  for (let index = 0; index < 3000; index++) {
    sink += (JSON.parse(JSON.stringify(referenceDocument)) as typeof referenceDocument).messages.length;
    sink += createHash('sha256').update(`${index}:${sink}`).digest()[0]!;
  }
  const used = process.cpuUsage(started);
  return sink < 0 ? Number.NaN : (used.user + used.system) / 1000;
}

export const sleep = (milliseconds: number) => new Promise<void>((resolve) => setTimeout(resolve, milliseconds));

/** Whose CPU time a measurement reads. */
export interface Watched {
  serverPid: number;
  upstreamPid: number;
  /** Reads the bench database's backends; null: Postgres CPU is not reported. */
  database: { admin: pg.Client; name: string } | null;
  /** A client of the bench database, to wait until the history has caught up with the responses. */
  history: pg.Client | null;
}

export async function historyRows(client: pg.Client): Promise<number> {
  return Number((await client.query<{ count: string }>('SELECT count(*) AS count FROM "LlmCall"')).rows[0]!.count);
}

interface CpuSnapshot {
  at: number;
  server: number;
  upstream: number;
  backends: Map<number, number>;
  /** The bench's own process (autocannon). */
  bench: number;
  machine: number;
}

async function snapshot(watched: Watched): Promise<CpuSnapshot> {
  const backends = new Map<number, number>();
  if (watched.database) {
    for (const pid of await backendPids(watched.database.admin, watched.database.name)) backends.set(pid, cpuTimeOrZero(pid));
  }
  const own = process.cpuUsage();
  return {
    at: performance.now(),
    server: cpuTimeOrZero(watched.serverPid),
    upstream: cpuTimeOrZero(watched.upstreamPid),
    backends,
    bench: (own.user + own.system) / 1000,
    machine: machineBusyMs(),
  };
}

export interface Measurement {
  load: LoadResult;
  /** Milliseconds of CPU per response. */
  serverCpuMs: number;
  upstreamCpuMs: number;
  /** Of the bench database's backends (a backend that exits during the run is lost); null when not read. */
  databaseCpuMs: number | null;
  /**
   * How long after the last response the write-behind history took to hold a row for every
   * response (its work is counted in the CPU above); null when the scenario writes no history.
   */
  historyLagMs: number | null;
  /** Responses whose history row had not appeared when the wait gave up. */
  historyMissing: number;
  /**
   * Cores kept busy by everything else on the machine during the window (other processes, Postgres'
   * background workers): when it is not near 0, the numbers above are those of a shared machine.
   */
  otherCores: number;
  /** The median of three `referenceWorkMs()` just before the measured run. */
  referenceMs: number;
}

/** Waits until the history holds `expected` rows, or makes no progress for `stallMs`; returns the rows still missing. */
export async function awaitHistory(client: pg.Client, expected: number, stallMs = 10_000): Promise<number> {
  let rows = await historyRows(client);
  let progressAt = performance.now();
  while (rows < expected && performance.now() - progressAt < stallMs) {
    await sleep(50);
    const now = await historyRows(client);
    if (now > rows) progressAt = performance.now();
    rows = now;
  }
  return Math.max(0, expected - rows);
}

/** Waits until the history stops growing (no new row for `quietMs`, at most `maxMs`): the previous load's backlog is written. */
export async function awaitQuietHistory(client: pg.Client, quietMs = 1000, maxMs = 60_000): Promise<void> {
  const deadline = performance.now() + maxMs;
  let rows = await historyRows(client);
  let changedAt = performance.now();
  while (performance.now() - changedAt < quietMs && performance.now() < deadline) {
    await sleep(100);
    const now = await historyRows(client);
    if (now !== rows) changedAt = performance.now();
    rows = now;
  }
}

/**
 * A warm-up run, then a measured one between two readings of the processes' CPU time. Before the
 * first reading the warm-up's history is written; after the run, the reading waits until the
 * write-behind history holds a row per response (scenarios with `writesHistory`), so that the
 * batches written behind the callers' backs are counted with the requests that caused them.
 */
export async function measure(
  target: LoadTarget,
  options: { connections: number; seconds: number; warmupSeconds: number; writesHistory: boolean; watched: Watched },
): Promise<Measurement> {
  const history = options.writesHistory ? options.watched.history : null;
  // A backlog left by the previous scenario would be charged to this one.
  if (options.watched.history) await awaitQuietHistory(options.watched.history);
  if (options.warmupSeconds > 0) {
    const rowsBeforeWarmUp = history ? await historyRows(history) : 0;
    const warmUp = await runLoad(target, { connections: options.connections, seconds: options.warmupSeconds });
    if (history) await awaitHistory(history, rowsBeforeWarmUp + warmUp.responses);
  }
  await sleep(300);
  const referenceMs = [referenceWorkMs(), referenceWorkMs(), referenceWorkMs()].sort((a, b) => a - b)[1]!;
  const rowsBefore = history ? await historyRows(history) : 0;
  const before = await snapshot(options.watched);
  const load = await runLoad(target, { connections: options.connections, seconds: options.seconds });
  const finished = performance.now();
  const historyMissing = history ? await awaitHistory(history, rowsBefore + load.responses) : 0;
  const historyLagMs = history ? performance.now() - finished : null;
  await sleep(100);
  const after = await snapshot(options.watched);
  const perResponse = (milliseconds: number) => (load.responses > 0 ? milliseconds / load.responses : Number.NaN);
  let databaseMs = 0;
  for (const [pid, cpu] of after.backends) databaseMs += cpu - (before.backends.get(pid) ?? 0);
  const ownMs = after.server - before.server + (after.upstream - before.upstream) + databaseMs + (after.bench - before.bench);
  const otherCores = Math.max(0, after.machine - before.machine - ownMs) / (after.at - before.at);
  return {
    load,
    serverCpuMs: perResponse(after.server - before.server),
    upstreamCpuMs: perResponse(after.upstream - before.upstream),
    databaseCpuMs: options.watched.database ? perResponse(databaseMs) : null,
    historyLagMs,
    historyMissing,
    otherCores,
    referenceMs,
  };
}

/** Times one HTTP request `runs` times after `warmups` untimed ones; returns the sorted durations in ms. */
export async function timeRequests(send: () => Promise<void>, options: { runs: number; warmups: number }): Promise<number[]> {
  for (let index = 0; index < options.warmups; index++) await send();
  const durations: number[] = [];
  for (let index = 0; index < options.runs; index++) {
    const started = performance.now();
    await send();
    durations.push(performance.now() - started);
  }
  return durations.sort((a, b) => a - b);
}

export function median(sorted: readonly number[]): number {
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
