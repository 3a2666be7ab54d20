import type pg from 'pg';
import { createBenchDatabase, dropBenchDatabase, openClient } from './database.ts';
import { runLoad, type LoadResult } from './load.ts';
import { awaitHistory, historyRows, median, sleep } from './measure.ts';
import { residentBytes, startServer, type Server } from './processes.ts';
import { createQuestions, scenarios } from './scenarios.ts';

export const startupScenarioName = 'startup';

/** One start of `node dist/main.js`: until GET /ready first answered 200. */
export interface StartSample {
  readyMs: number;
  /** The process's CPU time (user + system) by then: less sensitive than `readyMs` to other work on the machine. */
  cpuMs: number;
  rssBytes: number;
}

export interface StartupReport {
  starts: number;
  /** Each on a database created empty just before: the migrations run first. */
  fresh: StartSample[];
  /** On a database every migration was applied to already. */
  migrated: StartSample[];
  /** The calls sent to the last start on the migrated database. */
  calls: {
    load: LoadResult;
    /** RSS when /ready answered, then once the calls were answered, then once the history held a row per call, then after an idle pause. */
    rssAtReadyBytes: number;
    rssAfterCallsBytes: number;
    rssAfterHistoryBytes: number;
    rssIdleBytes: number;
    idleSeconds: number;
    /** VmHWM at the end: the highest RSS the process reached. */
    peakRssBytes: number;
    historyMissing: number;
  } | null;
}

export interface StartupOptions {
  adminUrl: string;
  /** The scenario's own database (created and dropped, over and over). */
  databaseName: string;
  openaiBaseURL: string;
  serverRoot?: string;
  /** Starts on each kind of database. */
  starts: number;
  /** Chat calls after the last start (0: none). */
  calls: number;
  connections: number;
  log(message: string): void;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/**
 * Starts Callboard from dist/ as `npm start` does, `starts` times on a fresh database each time and
 * `starts` times on an already migrated one, recording the time to ready, the CPU time and the RSS
 * then; the last start then answers `calls` cache-missing sendMessage calls (the `miss` scenario's,
 * through the fake upstream) and its RSS is read after them. `close()` stops whatever is still running.
 */
export function createStartupRun(options: StartupOptions) {
  let server: Server | undefined;
  let history: pg.Client | undefined;
  let created = false;

  const startOnce = async (databaseUrl: string): Promise<StartSample> => {
    server = await startServer({ databaseUrl, openaiBaseURL: options.openaiBaseURL, root: options.serverRoot });
    return { readyMs: server.readyMs, cpuMs: server.readyCpuMs, rssBytes: residentBytes(server.pid) };
  };
  const stop = async () => {
    await server?.stop();
    server = undefined;
  };
  const describe = (sample: StartSample) => `ready in ${sample.readyMs.toFixed(0)} ms (CPU ${sample.cpuMs.toFixed(0)} ms), RSS ${mib(sample.rssBytes)}`;

  return {
    async run(): Promise<StartupReport> {
      const fresh: StartSample[] = [];
      let databaseUrl = '';
      for (let index = 0; index < options.starts; index++) {
        databaseUrl = await createBenchDatabase(options.adminUrl, options.databaseName);
        created = true;
        fresh.push(await startOnce(databaseUrl));
        options.log(`startup, fresh database ${index + 1}/${options.starts}: ${describe(fresh.at(-1)!)}`);
        await stop();
      }
      if (options.starts === 0) {
        // The migrated starts still need a migrated database: one start, not measured, makes it.
        databaseUrl = await createBenchDatabase(options.adminUrl, options.databaseName);
        created = true;
        await startOnce(databaseUrl);
        await stop();
      }
      const migrated: StartSample[] = [];
      for (let index = 0; index < Math.max(1, options.starts); index++) {
        if (server) await stop();
        migrated.push(await startOnce(databaseUrl));
        options.log(`startup, migrated database ${index + 1}/${options.starts}: ${describe(migrated.at(-1)!)}`);
      }
      let calls: StartupReport['calls'] = null;
      if (options.calls > 0 && server) {
        history = await openClient(databaseUrl);
        const rowsBefore = await historyRows(history);
        const target = scenarios.miss.target({ serverOrigin: server.origin, upstreamOrigin: '', longText: '', questions: createQuestions() });
        const load = await runLoad(target, { connections: options.connections, amount: options.calls });
        const rssAfterCallsBytes = residentBytes(server.pid);
        const historyMissing = await awaitHistory(history, rowsBefore + load.responses);
        const rssAfterHistoryBytes = residentBytes(server.pid);
        const idleSeconds = 5;
        await sleep(idleSeconds * 1000);
        const rssIdleBytes = residentBytes(server.pid);
        calls = {
          load,
          rssAtReadyBytes: migrated.at(-1)!.rssBytes,
          rssAfterCallsBytes,
          rssAfterHistoryBytes,
          rssIdleBytes,
          idleSeconds,
          peakRssBytes: residentBytes(server.pid, 'peak'),
          historyMissing,
        };
        options.log(
          `startup, ${load.responses} sendMessage misses at ${options.connections} connections in ${load.seconds.toFixed(1)} s` +
            `${load.failures > 0 ? ` (${load.failures} FAILED: ${load.firstFailure ?? 'connection errors or non-2xx'})` : ''}: ` +
            `RSS ${mib(calls.rssAtReadyBytes)} at ready, ${mib(rssAfterCallsBytes)} after the calls, ${mib(rssAfterHistoryBytes)} once the history held them` +
            `${historyMissing > 0 ? ` (${historyMissing} ROWS MISSING)` : ''}, ${mib(rssIdleBytes)} after ${idleSeconds} s idle; peak ${mib(calls.peakRssBytes)}`,
        );
      }
      await this.close();
      return { starts: options.starts, fresh, migrated, calls };
    },
    /** Stops the server and drops the scenario's database; safe to call at any point and twice. */
    async close(): Promise<void> {
      await history?.end().catch(() => undefined);
      history = undefined;
      await stop();
      if (created) {
        created = false;
        await dropBenchDatabase(options.adminUrl, options.databaseName);
      }
    },
  };
}

export type StartupRun = ReturnType<typeof createStartupRun>;

/** Median of a field of the samples. */
export const medianOf = (samples: StartSample[], field: keyof StartSample) => median(samples.map((sample) => sample[field]).sort((a, b) => a - b));

export const startupTargets = { readyMs: 2000, rssAfterCallsBytes: 250 * 2 ** 20 };

/** The scenario's section of bench/results.md. */
export function renderStartup(report: StartupReport, connections: number): string[] {
  const row = (title: string, samples: StartSample[]) => {
    const ready = samples.map((sample) => sample.readyMs).sort((a, b) => a - b);
    return (
      `| ${title} | ${samples.length} | ${medianOf(samples, 'readyMs').toFixed(0)} | ${ready[0]!.toFixed(0)} | ${ready.at(-1)!.toFixed(0)} | ` +
      `${medianOf(samples, 'cpuMs').toFixed(0)} | ${(medianOf(samples, 'rssBytes') / 2 ** 20).toFixed(0)} |`
    );
  };
  const lines = [
    '## Start-up and memory',
    '',
    '| Database | starts | ready median ms | min ms | max ms | CPU by ready, median ms | RSS at ready, median MiB |',
    '|---|--:|--:|--:|--:|--:|--:|',
    ...(report.fresh.length > 0 ? [row('fresh (migrations run)', report.fresh)] : []),
    row('already migrated', report.migrated),
    '',
    '`node dist/main.js` with `NODE_ENV=production`, as `npm start` runs it (built first when stale), on a Postgres database ' +
      'of its own, not pinned to a core: from the spawn to the first `GET /ready` that answered 200 (tried every 10 ms). ' +
      'CPU is the process\'s user + system time by then (10 ms ticks), less sensitive than the wall time to other work on the machine.',
    '',
  ];
  const calls = report.calls;
  if (calls) {
    lines.push(
      '| RSS MiB: at ready | after the calls | history written | after ' + `${calls.idleSeconds} s idle | peak (VmHWM) | calls | req/s | failed |`,
      '|--:|--:|--:|--:|--:|--:|--:|--:|',
      `| ${(calls.rssAtReadyBytes / 2 ** 20).toFixed(0)} | ${(calls.rssAfterCallsBytes / 2 ** 20).toFixed(0)} | ${(calls.rssAfterHistoryBytes / 2 ** 20).toFixed(0)} | ` +
        `${(calls.rssIdleBytes / 2 ** 20).toFixed(0)} | ${(calls.peakRssBytes / 2 ** 20).toFixed(0)} | ${calls.load.responses} | ${calls.load.requestsPerSecond.toFixed(0)} | ${calls.load.failures} |`,
      '',
      `After the last start on the migrated database: ${calls.load.responses.toLocaleString('en')} \`sendMessage\` calls with \`cache: USE\` and a question ` +
        `unique to each (the \`miss\` scenario: a cache lookup, the fake upstream, a cache entry and a history row each), at ${connections} connections. ` +
        'RSS is read from /proc as the process runs (no forced garbage collection): once the calls were answered, once the history held a row per call' +
        `${calls.historyMissing > 0 ? ` (${calls.historyMissing} rows never appeared)` : ''}, and after a pause.`,
      '',
    );
  }
  return lines;
}

/** The scenario's lines of the Targets section. */
export function startupVerdicts(report: StartupReport | null): { met: boolean | null; text: string }[] {
  const fresh = report && report.fresh.length > 0 ? medianOf(report.fresh, 'readyMs') : null;
  const migrated = report ? medianOf(report.migrated, 'readyMs') : null;
  const rss = report?.calls ? Math.max(report.calls.rssAfterHistoryBytes, report.calls.rssIdleBytes) : null;
  const describe = (value: number | null) => (value === null ? 'not run' : `${value.toFixed(0)} ms`);
  return [
    {
      met: migrated === null ? null : migrated < startupTargets.readyMs && (fresh === null || fresh < startupTargets.readyMs),
      text: `ready < ${startupTargets.readyMs} ms after \`node dist/main.js\` on Postgres (median: ${describe(fresh)} on a fresh database, ${describe(migrated)} on a migrated one)`,
    },
    {
      met: rss === null ? null : rss < startupTargets.rssAfterCallsBytes,
      text:
        `RSS < ${startupTargets.rssAfterCallsBytes / 2 ** 20} MiB after ${report?.calls ? report.calls.load.responses.toLocaleString('en') : '10,000'} calls ` +
        `(${rss === null ? 'not run' : `${(rss / 2 ** 20).toFixed(0)} MiB, the higher of the readings once the history was written and after the pause`})`,
    },
  ];
}
