import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { CallStatsDimension } from '../src/analytics/call-stats.ts';
import { callStatsSql } from './lib/call-stats-sql.ts';
import { buildRollup, type RollupReport } from './lib/rollup.ts';
import { openClient, seedHistory, type SeedReport } from './lib/database.ts';
import { measure, median, referenceWorkMs, timeRequests, type Measurement, type Watched } from './lib/measure.ts';
import { renderPeerComparison, type PeerRow } from './lib/peer-report.ts';
import { coreLayout, installPortkey, peerNames, peerTarget, peerTitles, pin, portkeyVersion, startHop, startPortkey, type Peer, type PeerName } from './lib/peers.ts';
import { passedSettings } from './lib/processes.ts';
import {
  buildLongText,
  createQuestions,
  graphql,
  primeCache,
  scenarios,
  type ScenarioContext,
  type ScenarioName,
} from './lib/scenarios.ts';
import { createStack, stackOptionsFromEnvironment } from './lib/stack.ts';
import { createStartupRun, renderStartup, startupScenarioName, startupVerdicts, type StartupReport, type StartupRun } from './lib/startup.ts';
import { measureStreaming, streamScenarioName, ttfbStats, type StreamReport } from './lib/stream.ts';
import { measureTokenizers, renderTokenizerReport, tokenizerPartName, type TokenizerReport } from './lib/tokenizers.ts';

const environment = process.env;
const stackOptions = stackOptionsFromEnvironment(environment);
const settings = {
  ...stackOptions,
  seconds: Number(environment.BENCH_SECONDS || 5),
  warmupSeconds: Number(environment.BENCH_WARMUP_SECONDS || 5),
  connections: (environment.BENCH_CONNECTIONS || '1,32').split(',').map(Number),
  scenarios: (environment.BENCH_SCENARIOS || 'startup,upstream,miss,hit,embedding,tokens,tokenizer,stream').split(',') as (ScenarioName | typeof streamScenarioName | typeof tokenizerPartName | typeof startupScenarioName)[],
  /** The startup scenario: starts on each kind of database, then chat calls to the last one, at so many connections. */
  starts: Number(environment.BENCH_STARTS ?? 5),
  startupCalls: Number(environment.BENCH_STARTUP_CALLS ?? 10_000),
  startupConnections: Number(environment.BENCH_STARTUP_CONNECTIONS || 8),
  /** Set to '' for none. */
  peers: (environment.BENCH_PEERS ?? peerNames.join(',')).split(',').filter((name) => name !== '') as PeerName[],
  pinning: coreLayout(environment.BENCH_PIN === '0'),
  /** Timed requests of each series of the stream scenario, after `streamWarmups` untimed ones. */
  streamRequests: Number(environment.BENCH_STREAM_REQUESTS || 500),
  streamWarmups: Number(environment.BENCH_STREAM_WARMUPS || 300),
  historyRows: Number(environment.BENCH_HISTORY_ROWS ?? 1_000_000),
  statsRuns: Number(environment.BENCH_STATS_RUNS || 10),
  /** The whole run is cut short (children killed, database dropped) after this long. */
  timeoutSeconds: Number(environment.BENCH_TIMEOUT_SECONDS || 1200),
};
for (const name of settings.scenarios) if (!(name in scenarios) && name !== streamScenarioName && name !== tokenizerPartName && name !== startupScenarioName) throw new Error(`BENCH_SCENARIOS: unknown scenario "${name}"`);
for (const name of settings.peers) if (!peerNames.includes(name)) throw new Error(`BENCH_PEERS: unknown peer "${name}" (${peerNames.join(', ')})`);

/** Issue 10's targets. */
const targets = { hitCpuMs: 0.25, missCpuOverPortkey: 1, missCpuGoalOverPortkey: 0.8, postgresCpuPerMissMs: 0.15, streamAddedTtfbMs: 2, callStatsMs: 300 };
/** The latency percentiles cost a sort of every row; dashboards that do not ask for them do not pay for it. */
const statsGroupings: { groupBy: CallStatsDimension[]; percentiles: boolean }[] = [
  { groupBy: ['MODEL', 'DAY'], percentiles: true },
  { groupBy: ['MODEL', 'DAY'], percentiles: false },
  { groupBy: ['CACHE_STATUS'], percentiles: true },
  { groupBy: ['TAG'], percentiles: true },
];
const resultsPath = fileURLToPath(new URL('./results.md', import.meta.url));

const stack = createStack(stackOptions);
let admin: pg.Client | undefined;
let historyClient: pg.Client | undefined;
let peer: Peer | undefined;
let startupRun: StartupRun | undefined;

async function cleanUp(): Promise<void> {
  await Promise.all([
    admin?.end().catch(() => undefined),
    historyClient?.end().catch(() => undefined),
    peer?.stop(2000),
    startupRun?.close().catch((error: unknown) => console.error('could not stop the startup scenario:', error instanceof Error ? error.message : error)),
  ]);
  await stack.close();
}

let exiting = false;
function abort(reason: string, code: number): void {
  if (exiting) return;
  exiting = true;
  console.error(`\n${reason}: stopping the children and dropping the bench database`);
  void cleanUp().finally(() => process.exit(code));
}
process.on('SIGINT', () => abort('interrupted', 130));
process.on('SIGTERM', () => abort('terminated', 143));
setTimeout(() => abort(`the bench ran longer than ${settings.timeoutSeconds} s`, 1), settings.timeoutSeconds * 1000).unref();

const startedAt = performance.now();
const log = (message: string) => console.log(`[${((performance.now() - startedAt) / 1000).toFixed(0).padStart(3)} s] ${message}`);

interface Row {
  scenario: ScenarioName;
  title: string;
  connections: number;
  measurement: Measurement;
}

interface StatsRow {
  groupBy: CallStatsDimension[];
  percentiles: boolean;
  buckets: number;
  durations: number[];
}

async function main(): Promise<void> {
  const loadBefore = loadavg();
  // Warms the yardstick's code so that every reading is of optimised code.
  for (let index = 0; index < 5; index++) referenceWorkMs();
  const peerNotes: string[] = [];
  let portkeyFolder: string | undefined;
  if (settings.peers.includes('portkey')) {
    try {
      portkeyFolder = installPortkey(log);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      log(`could not install @portkey-ai/gateway@${portkeyVersion}; going on without the Portkey rows:\n${reason}`);
      peerNotes.push(`Portkey not measured: \`npm install @portkey-ai/gateway@${portkeyVersion}\` failed (${reason.split('\n')[0]!.slice(0, 200)}).`);
    }
  }
  log(`bench database ${settings.databaseName} on ${new URL(settings.adminUrl).host}; fake upstream and Callboard starting`);
  const { databaseUrl, upstream, server } = await stack.start();
  admin = await openClient(settings.adminUrl);
  historyClient = await openClient(databaseUrl);
  log(`Callboard (pid ${server.pid}) at ${server.origin}, fake upstream (pid ${upstream.pid}) at ${upstream.url}`);
  // Before anything is pinned: a child inherits the bench's core, and `npm start` runs on every core.
  let startup: StartupReport | null = null;
  if (settings.scenarios.includes(startupScenarioName)) {
    startupRun = createStartupRun({
      adminUrl: settings.adminUrl,
      databaseName: `${settings.databaseName}_startup`,
      openaiBaseURL: upstream.openaiBaseURL,
      serverRoot: settings.serverRoot,
      starts: settings.starts,
      calls: settings.startupCalls,
      connections: settings.startupConnections,
      log,
    });
    startup = await startupRun.run();
  }
  const layout = settings.pinning;
  if (layout) {
    const pinned = pin(server.pid, layout.server) && pin(upstream.pid, layout.others) && pin(process.pid, layout.others);
    log(pinned ? `pinned: the measured server to core ${layout.server}, the bench and the fake upstream to core ${layout.others}` : 'taskset failed: nothing pinned');
    if (!pinned) settings.pinning = null;
  }

  const longText = await buildLongText(server.origin, 4000);
  const context: ScenarioContext = { serverOrigin: server.origin, upstreamOrigin: upstream.url, longText: longText.text, questions: createQuestions() };
  await primeCache(context);
  log(`tokenCount text: ${longText.text.length} characters, ${longText.tokens} tokens (gpt-4o); cache primed for the hit scenarios`);

  const watched: Watched = { serverPid: server.pid, upstreamPid: upstream.pid, database: { admin, name: settings.databaseName }, history: historyClient };
  const rows: Row[] = [];
  let streaming: StreamReport | null = null;
  let tokenizers: TokenizerReport | null = null;
  for (const name of settings.scenarios) {
    if (name === tokenizerPartName) {
      log('tokenizer: Callboard\'s encoder beside gpt-tokenizer and js-tiktoken, in a process of its own' + (settings.pinning ? ` pinned to core ${settings.pinning.server}` : ''));
      tokenizers = await measureTokenizers(log, settings.pinning?.server ?? null);
      continue;
    }
    if (name === startupScenarioName) continue;
    if (name === streamScenarioName) {
      streaming = await measureStreaming(context, { requests: settings.streamRequests, warmups: settings.streamWarmups, history: historyClient });
      const direct = streaming.series.find((series) => series.name === 'direct');
      for (const series of streaming.series) {
        const { p50, p95, mean } = ttfbStats(series);
        const added = direct && series !== direct ? `, added p50 ${(p50 - ttfbStats(direct).p50).toFixed(2)} ms, p95 ${(p95 - ttfbStats(direct).p95).toFixed(2)} ms` : '';
        log(
          `${series.title.padEnd(32)} c= 1: time to first content p50 ${p50.toFixed(2)} ms, p95 ${p95.toFixed(2)} ms, mean ${mean.toFixed(2)} ms${added}` +
            `, to the end p50 ${median(series.totalMs).toFixed(2)} ms` +
            (series.failures > 0 ? `, ${series.failures} FAILED (${series.firstFailure})` : ''),
        );
      }
      if (streaming.historyMissing > 0) log(`stream: ${streaming.historyMissing} HISTORY ROWS MISSING`);
      const phases = streaming.missPhases;
      if (phases) {
        log(
          `streamed miss inside Callboard (medians of ${phases.calls} history rows): first chunk to the door ${phases.firstChunkMs.toFixed(2)} ms after the call began ` +
            `(upstream attempt ${phases.attemptMs.toFixed(2)} ms, before it ${phases.beforeUpstreamMs.toFixed(2)} ms), outside the pipeline ${phases.outsideMs.toFixed(2)} ms`,
        );
      }
      continue;
    }
    const scenario = scenarios[name];
    for (const connections of settings.connections) {
      const measurement = await measure(scenario.target(context), {
        connections,
        seconds: settings.seconds,
        warmupSeconds: settings.warmupSeconds,
        writesHistory: scenario.writesHistory,
        watched,
      });
      rows.push({ scenario: name, title: scenario.title, connections, measurement });
      const { load } = measurement;
      log(
        `${scenario.title.padEnd(32)} c=${String(connections).padStart(2)}: ${load.requestsPerSecond.toFixed(0).padStart(6)} req/s, ` +
          `p50 ${load.p50Ms.toFixed(2)} ms, p99 ${load.p99Ms.toFixed(2)} ms, Callboard CPU ${measurement.serverCpuMs.toFixed(3)} ms/req` +
          (scenario.usesUpstream ? `, upstream CPU ${measurement.upstreamCpuMs.toFixed(3)} ms/req` : '') +
          (measurement.historyLagMs !== null ? `, history lag ${measurement.historyLagMs.toFixed(0)} ms` : '') +
          (measurement.historyMissing > 0 ? `, ${measurement.historyMissing} HISTORY ROWS MISSING` : '') +
          `, other load ${measurement.otherCores.toFixed(2)} cores, yardstick ${measurement.referenceMs.toFixed(1)} ms` +
          (load.failures > 0 ? `, ${load.failures} FAILED (${load.firstFailure ?? 'connection errors or non-2xx'})` : ''),
      );
    }
  }

  const peerRows: PeerRow[] = [];
  for (const name of settings.peers) {
    if (name === 'portkey' && !portkeyFolder) continue;
    try {
      peer = name === 'rest' ? undefined : name === 'portkey' ? await startPortkey(portkeyFolder!) : await startHop(upstream.url);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      log(`${peerTitles[name]} did not start; going on without it:\n${reason.slice(0, 2000)}`);
      peerNotes.push(`${peerTitles[name]} not measured: it did not start (${reason.split('\n')[0]!.slice(0, 200)}).`);
      continue;
    }
    if (peer && settings.pinning) pin(peer.pid, settings.pinning.server);
    const peerWatched: Watched = peer ? { serverPid: peer.pid, upstreamPid: upstream.pid, database: null, history: null } : watched;
    for (const connections of settings.connections) {
      const measurement = await measure(peerTarget(name, peer?.origin ?? server.origin, upstream.url, context.questions), {
        connections,
        seconds: settings.seconds,
        warmupSeconds: settings.warmupSeconds,
        writesHistory: name === 'rest',
        watched: peerWatched,
      });
      peerRows.push({ peer: name, connections, measurement });
      const { load } = measurement;
      log(
        `${peerTitles[name].padEnd(32)} c=${String(connections).padStart(2)}: ${load.requestsPerSecond.toFixed(0).padStart(6)} req/s, ` +
          `p50 ${load.p50Ms.toFixed(2)} ms, p99 ${load.p99Ms.toFixed(2)} ms, server CPU ${measurement.serverCpuMs.toFixed(3)} ms/req, upstream CPU ${measurement.upstreamCpuMs.toFixed(3)} ms/req` +
          (load.failures > 0 ? `, ${load.failures} FAILED (${load.firstFailure ?? 'connection errors or non-2xx'})` : ''),
      );
    }
    await peer?.stop(5000);
    peer = undefined;
  }

  let seed: SeedReport | null = null;
  let rollup: RollupReport | null = null;
  const stats: StatsRow[] = [];
  let plan: string | null = null;
  if (settings.historyRows > 0) {
    log(`seeding ${settings.historyRows.toLocaleString('en')} history rows`);
    seed = await seedHistory(databaseUrl, settings.historyRows);
    log(`seeded in ${seed.seconds.toFixed(1)} s: LlmCall ${(seed.tableBytes / 2 ** 20).toFixed(0)} MiB; ${seed.tables.join(' + ')} with indexes ${(seed.totalBytes / 2 ** 20).toFixed(0)} MiB`);
    rollup = await buildRollup(databaseUrl);
    log(
      `rolled up in ${rollup.seconds.toFixed(1)} s (${rollup.steps} steps, ${rollup.hourRows} hourly rows, ${rollup.dayRows} daily rows); ` +
        `[MODEL, DAY] from the rollup vs percentile_cont over ${rollup.buckets} buckets: counts and sums ${rollup.sumsMatch ? 'equal' : 'DIFFER'}, ` +
        `p50 error max ${(rollup.p50.max * 100).toFixed(3)}% mean ${(rollup.p50.mean * 100).toFixed(3)}%, p95 error max ${(rollup.p95.max * 100).toFixed(3)}% mean ${(rollup.p95.mean * 100).toFixed(3)}%`,
    );
    for (const { groupBy, percentiles } of statsGroupings) {
      const body = JSON.stringify({
        query: `query Stats($groupBy: [CallStatsDimension!]!) { callStats(groupBy: $groupBy) {
          model day cacheStatus tag calls errors cacheHits cacheMisses hitRate promptTokens completionTokens
          costUsd tokensSaved costSavedUsd ${percentiles ? 'latencyP50Ms latencyP95Ms' : ''} latencyMaxMs } }`,
        variables: { groupBy },
      });
      let buckets = 0;
      const durations = await timeRequests(
        async () => {
          buckets = (await graphql<{ callStats: unknown[] }>(server.origin, body)).callStats.length;
        },
        { runs: settings.statsRuns, warmups: 2 },
      );
      stats.push({ groupBy, percentiles, buckets, durations });
      log(`callStats(groupBy: [${groupBy.join(', ')}])${percentiles ? '' : ' without percentiles'}: ${buckets} buckets, median ${median(durations).toFixed(0)} ms (min ${durations[0]!.toFixed(0)}, max ${durations.at(-1)!.toFixed(0)})`);
    }
    const modelDay = stats[0]!;
    if (median(modelDay.durations) >= targets.callStatsMs) {
      const { sql, parameters } = await callStatsSql(modelDay.groupBy);
      const client = await openClient(databaseUrl);
      try {
        const explained = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, parameters);
        plan = explained.rows.map((row) => row['QUERY PLAN']).join('\n');
      } finally {
        await client.end();
      }
    }
  }

  // LEVEL=warn: whatever Callboard printed is a warning or an error (a failing history write, say).
  const complaints = server.output.filter((line) => line.trim() !== '');
  if (complaints.length > 0) log(`Callboard logged ${complaints.length} warning or error lines; the first:\n${complaints.slice(0, 3).join('\n').slice(0, 2000)}`);
  const postgresVersion = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
  const report = renderReport({ rows, streaming, tokenizers, startup, peerRows, peerNotes, seed, rollup, stats, plan, longTextTokens: longText.tokens, postgresVersion, complaints, loadBefore, loadAfter: loadavg() });
  console.log(`\n${report}`);
  writeFileSync(resultsPath, report);
  log(`written to ${resultsPath}`);
}

const fixed = (value: number | null | undefined, digits: number) => (value === null || value === undefined || Number.isNaN(value) ? '–' : value.toFixed(digits));

function renderReport(input: {
  rows: Row[];
  streaming: StreamReport | null;
  tokenizers: TokenizerReport | null;
  startup: StartupReport | null;
  peerRows: PeerRow[];
  peerNotes: string[];
  seed: SeedReport | null;
  rollup: RollupReport | null;
  stats: StatsRow[];
  plan: string | null;
  longTextTokens: number;
  postgresVersion: string;
  complaints: string[];
  loadBefore: number[];
  loadAfter: number[];
}): string {
  const { rows, streaming, startup, seed, rollup, stats, plan } = input;
  const lines: string[] = [];
  const postgresVersion = input.postgresVersion;
  lines.push('# Callboard bench results', '');
  lines.push(
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · Node ${process.version} · ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'CPU'} · ` +
      `Postgres ${postgresVersion} · load average ${input.loadBefore[0]!.toFixed(1)} before, ${input.loadAfter[0]!.toFixed(1)} after · ` +
      `${settings.warmupSeconds} s warm-up + ${settings.seconds} s per run · bench, Callboard, fake upstream and Postgres share the machine.`,
    '',
  );
  const root = settings.serverRoot ?? fileURLToPath(new URL('..', import.meta.url));
  const revision = (() => {
    try {
      const commit = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
      const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--', 'src', 'prisma'], { encoding: 'utf8' }).trim() !== '';
      return `commit ${commit}${dirty ? ' with uncommitted changes under src/ or prisma/' : ''}`;
    } catch {
      return 'not a git checkout';
    }
  })();
  lines.push(`Callboard from ${settings.serverRoot ? `${settings.serverRoot} (BENCH_SERVER_ROOT)` : 'this checkout'}: ${revision}.`, '');
  const passed = Object.entries(passedSettings());
  lines.push(
    passed.length === 0
      ? 'Callboard runs with its defaults (project config.ini, LEVEL=warn, BASE_URL = the fake upstream).'
      : `Callboard runs with these settings from the bench's environment: ${passed.map(([key, value]) => `\`${key}=${value}\``).join(', ')}.`,
    '',
  );
  lines.push(
    '| Scenario | Connections | req/s | p50 ms | p99 ms | Callboard CPU ms/req | upstream CPU ms/req | Postgres CPU ms/req | history lag ms | failed | other load, cores | yardstick ms |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const row of rows) {
    const { load } = row.measurement;
    const direct = row.scenario === 'upstream';
    lines.push(
      `| ${row.title} | ${row.connections} | ${load.requestsPerSecond.toFixed(0)} | ${fixed(load.p50Ms, 2)} | ${fixed(load.p99Ms, 2)} | ` +
        `${direct ? '–' : fixed(row.measurement.serverCpuMs, 3)} | ${scenarios[row.scenario].usesUpstream ? fixed(row.measurement.upstreamCpuMs, 3) : '–'} | ` +
        `${direct ? '–' : fixed(row.measurement.databaseCpuMs, 3)} | ${fixed(row.measurement.historyLagMs, 0)}${row.measurement.historyMissing > 0 ? ` (${row.measurement.historyMissing} rows missing)` : ''} | ${load.failures} | ${row.measurement.otherCores.toFixed(2)} | ${row.measurement.referenceMs.toFixed(1)} |`,
    );
  }
  lines.push('');
  lines.push(
    `tokenCount counts a ${input.longTextTokens}-token text (gpt-4o, o200k_base). The embedding scenario returns a ` +
      `${settings.embeddingDimensions}-dimension vector. CPU is user + system time from /proc/<pid>/stat over the measured run ` +
      '(10 ms ticks), divided by the responses; the window closes once the write-behind history holds a row per response ' +
      '("history lag": how long after the last response that took), so its batches are counted. Postgres CPU is that of the bench database\'s backends. ' +
      '"Other load" is the cores kept busy by everything else on the machine during the run (/proc/stat minus the processes above and the bench): ' +
      'on a shared machine CPU per request rises with it. "Yardstick" is the CPU time of a fixed piece of work (JSON and SHA-256) in the bench process ' +
      'just before the run: about 21 ms when the host is quiet; when it is higher the host was slower (a shared VM), and CPU per request is inflated alike.',
    '',
  );

  const byKey = (scenario: ScenarioName, connections: number) => rows.find((row) => row.scenario === scenario && row.connections === connections)?.measurement;
  const verdicts: string[] = [];
  const verdict = (met: boolean | null, text: string) => verdicts.push(`- ${met === null ? 'NOT MEASURED' : met ? 'MET' : 'MISSED'}: ${text}`);

  const missLines: string[] = [];
  for (const connections of settings.connections) {
    const miss = byKey('miss', connections);
    const direct = byKey('upstream', connections);
    if (!miss) continue;
    const added = direct ? miss.load.p50Ms - direct.load.p50Ms : Number.NaN;
    missLines.push(
      `| ${connections} | ${fixed(miss.serverCpuMs, 3)} | ${fixed(miss.upstreamCpuMs, 3)} | ${fixed(miss.serverCpuMs - miss.upstreamCpuMs, 3)} | ` +
        `${fixed(miss.load.p50Ms, 2)} | ${direct ? fixed(direct.load.p50Ms, 2) : '–'} | ${fixed(added, 2)} |`,
    );
  }
  if (missLines.length > 0) {
    lines.push(
      '## Cache miss over the upstream',
      '',
      '| Connections | Callboard CPU ms/req | upstream CPU ms/req (same run) | Callboard over upstream | miss p50 ms | direct p50 ms | p50 added ms |',
      '|--:|--:|--:|--:|--:|--:|--:|',
      ...missLines,
      '',
    );
  }

  const streamDirect = streaming?.series.find((series) => series.name === 'direct');
  const streamAdded = (name: 'miss' | 'hit', at: 'p50' | 'p95') => {
    const series = streaming?.series.find((candidate) => candidate.name === name);
    return series && streamDirect ? ttfbStats(series)[at] - ttfbStats(streamDirect)[at] : null;
  };
  if (streaming) {
    lines.push(
      '## Streamed chat: time to first content, 1 connection',
      '',
      '| Series | requests | p50 ms | p95 ms | mean ms | p50 added ms | p95 added ms | to the end p50 ms | failed |',
      '|---|--:|--:|--:|--:|--:|--:|--:|--:|',
      ...streaming.series.map((series) => {
        const { p50, p95, mean } = ttfbStats(series);
        const added = series.name === 'direct' ? ['–', '–'] : [fixed(streamAdded(series.name, 'p50'), 2), fixed(streamAdded(series.name, 'p95'), 2)];
        return `| ${series.title} | ${series.requests} | ${fixed(p50, 2)} | ${fixed(p95, 2)} | ${fixed(mean, 2)} | ${added.join(' | ')} | ${fixed(median(series.totalMs), 2)} | ${series.failures} |`;
      }),
      '',
      `Sequential \`POST /v1/chat/completions\` with \`stream: true\` over one keep-alive connection per series (node's http client), ` +
        `${streaming.warmups} untimed requests then ${streaming.requests} timed ones each, the three series taking turns in blocks of 50 ` +
        '(consecutive requests of a kind, so that the work a request leaves behind weighs on the next one of its kind; turns, so that changes ' +
        'in the machine\'s load weigh on all three alike; a 150 ms pause before each block). Time to first content: from sending the request to ' +
        'receiving the first event whose `choices[0].delta.content` is not empty (the body is read as it arrives, then to its end, and the whole ' +
        'answer is checked). Direct: the fake upstream with the body Callboard sends it. Miss: the REST door with `x-callboard-cache: use` and ' +
        'a new question per request (cache lookup, upstream stream, cache entry and history row). Hit: one question over and over, replayed ' +
        `from the cache. Added: minus the direct series' value.` +
        (streaming.historyMissing > 0 ? ` ${streaming.historyMissing} history rows of the Callboard series never appeared.` : ''),
      '',
    );
    const phases = streaming.missPhases;
    if (phases) {
      lines.push(
        `Where a streamed miss spends its time, from Callboard's history rows of the ${phases.calls} timed requests (medians of per-request values): ` +
          `the first chunk reached the door ${fixed(phases.firstChunkMs, 2)} ms after the call began (\`timeToFirstTokenMs\`); of that, the upstream ` +
          `attempt (request out through the openai SDK to the provider's first chunk) ${fixed(phases.attemptMs, 2)} ms and everything before it ` +
          `(limits, cache lookup, request building) ${fixed(phases.beforeUpstreamMs, 2)} ms. The remaining ${fixed(phases.outsideMs, 2)} ms of the ` +
          "client's time to first content are outside the pipeline: HTTP serving, the door reading the body, writing the first two events " +
          '(the role, then the first content), loopback both ways, and any wait for an event loop still busy with the previous request.',
        '',
      );
    }
  }

  if (startup) lines.push(...renderStartup(startup, settings.startupConnections));
  if (input.tokenizers) lines.push(...renderTokenizerReport(input.tokenizers));

  lines.push(
    ...renderPeerComparison({
      connections: settings.connections,
      graphqlMiss: (connections) => byKey('miss', connections),
      direct: (connections) => byKey('upstream', connections),
      rows: input.peerRows,
      notes: input.peerNotes,
      pinning: settings.pinning
        ? `Each measured server ran pinned (taskset) to core ${settings.pinning.server}, the bench and the fake upstream to core ${settings.pinning.others}; Postgres unpinned.`
        : 'Nothing was pinned to a core.',
    }),
  );

  if (seed) {
    lines.push(
      '## callStats over 1,000,000 history rows'.replace('1,000,000', seed.rows.toLocaleString('en')),
      '',
      `Seeded with SQL in ${seed.seconds.toFixed(1)} s (8 models, 30 days, 5% errors, 30% hits, 0 to 2 of 10 tags, bodies stored); ` +
        `LlmCall (what callStats scans) is ${(seed.tableBytes / 2 ** 20).toFixed(0)} MiB; ${seed.tables.join(' + ')} with indexes ${(seed.totalBytes / 2 ** 20).toFixed(0)} MiB. ` +
        `Timed over HTTP, ${settings.statsRuns} runs after 2 warm-up runs.`,
      '',
      ...(rollup
        ? [
            `The rollup of the seeded history was built in ${rollup.seconds.toFixed(1)} s (${rollup.steps} steps of up to a day, ${rollup.hourRows.toLocaleString('en')} hourly rows, ${rollup.dayRows} daily rows) before the timings. ` +
              `[MODEL, DAY] answered from it against percentile_cont over every call (${rollup.buckets} buckets): counts and sums ${rollup.sumsMatch ? 'equal' : 'DIFFER'}; ` +
              `relative error of p50 max ${(rollup.p50.max * 100).toFixed(3)}%, mean ${(rollup.p50.mean * 100).toFixed(3)}%; of p95 max ${(rollup.p95.max * 100).toFixed(3)}%, mean ${(rollup.p95.mean * 100).toFixed(3)}%.`,
            '',
          ]
        : []),
      '| groupBy | latency p50/p95 asked | buckets | median ms | min ms | max ms |',
      '|---|---|--:|--:|--:|--:|',
      ...stats.map((row) => `| [${row.groupBy.join(', ')}] | ${row.percentiles ? 'yes' : 'no'} | ${row.buckets} | ${median(row.durations).toFixed(0)} | ${row.durations[0]!.toFixed(0)} | ${row.durations.at(-1)!.toFixed(0)} |`),
      '',
    );
  }

  const hitValues = settings.connections.map((connections) => byKey('hit', connections)).filter((value): value is Measurement => value !== undefined);
  verdict(
    hitValues.length > 0 ? hitValues.every((value) => value.serverCpuMs < targets.hitCpuMs) : null,
    `cache hit < ${targets.hitCpuMs} ms Callboard CPU per request (${hitValues.map((value) => `${fixed(value.serverCpuMs, 3)} ms at ${value.load.connections}`).join(', ') || 'not run'})`,
  );
  // Issue 10's miss targets are against Portkey in the same run: its CPU per request, and its added p50 at 1 connection.
  const portkeyAt = (connections: number) => input.peerRows.find((row) => row.peer === 'portkey' && row.connections === connections)?.measurement;
  const missPairs = settings.connections.flatMap((connections) => {
    const miss = byKey('miss', connections);
    const portkey = portkeyAt(connections);
    return miss && portkey ? [{ connections, miss, portkey }] : [];
  });
  verdict(
    missPairs.length > 0 ? missPairs.every(({ miss, portkey }) => miss.serverCpuMs <= portkey.serverCpuMs * targets.missCpuOverPortkey) : null,
    `cache miss server CPU per request at most ${targets.missCpuOverPortkey}× Portkey's, goal ${targets.missCpuGoalOverPortkey}× (${
      missPairs.map(({ connections, miss, portkey }) => `${fixed(miss.serverCpuMs, 2)} vs ${fixed(portkey.serverCpuMs, 2)} ms (${fixed(miss.serverCpuMs / portkey.serverCpuMs, 2)}×) at ${connections}`).join(', ') ||
      'Portkey not run'
    })`,
  );
  const databaseValues = settings.connections
    .map((connections) => byKey('miss', connections))
    .filter((value): value is Measurement => value !== undefined && value.databaseCpuMs !== null);
  verdict(
    databaseValues.length > 0 ? databaseValues.every((value) => value.databaseCpuMs! < targets.postgresCpuPerMissMs) : null,
    `cache miss Postgres CPU per request < ${targets.postgresCpuPerMissMs} ms (${databaseValues.map((value) => `${fixed(value.databaseCpuMs, 3)} ms at ${value.load.connections}`).join(', ') || 'not read'})`,
  );
  const missOne = byKey('miss', 1);
  const directOne = byKey('upstream', 1);
  const portkeyOne = portkeyAt(1);
  const addedOne = missOne && directOne ? missOne.load.p50Ms - directOne.load.p50Ms : null;
  const portkeyAddedOne = portkeyOne && directOne ? portkeyOne.load.p50Ms - directOne.load.p50Ms : null;
  verdict(
    addedOne === null || portkeyAddedOne === null ? null : addedOne <= portkeyAddedOne,
    `cache miss adds at most Portkey's p50 at 1 connection (${fixed(addedOne, 2)} ms vs ${fixed(portkeyAddedOne, 2)} ms)`,
  );
  const streamMissAdded = streamAdded('miss', 'p50');
  verdict(
    streamMissAdded === null ? null : streamMissAdded < targets.streamAddedTtfbMs,
    `streamed cache miss adds < ${targets.streamAddedTtfbMs} ms to the time to first content at p50, 1 connection ` +
      `(${fixed(streamMissAdded, 2)} ms; p95 ${fixed(streamAdded('miss', 'p95'), 2)} ms; a streamed hit ${fixed(streamAdded('hit', 'p50'), 2)} ms at p50)`,
  );
  const modelDay = stats.find((row) => row.groupBy.join() === 'MODEL,DAY' && row.percentiles);
  const modelDayMedian = modelDay ? median(modelDay.durations) : null;
  verdict(
    modelDayMedian === null || !seed ? null : modelDayMedian < targets.callStatsMs,
    `callStats [MODEL, DAY] over ${seed ? seed.rows.toLocaleString('en') : '1,000,000'} rows < ${targets.callStatsMs} ms (median ${fixed(modelDayMedian, 0)} ms)`,
  );
  if (settings.scenarios.includes(startupScenarioName)) for (const { met, text } of startupVerdicts(startup)) verdict(met, text);
  lines.push('## Targets', '', ...verdicts, '');
  if (verdicts.some((line) => line.startsWith('- MISSED: cache'))) {
    lines.push('Where the time goes: `npx tsx bench/profile.ts miss 1` (or `hit 32`, ...) profiles Callboard under the same load.', '');
  }
  if (verdicts.some((line) => line.startsWith('- MISSED: streamed'))) {
    lines.push('Where a streamed miss spends its CPU: `npx tsx bench/profile.ts stream-miss` profiles Callboard through the same series.', '');
  }
  if (input.complaints.length > 0) {
    lines.push(`Callboard logged ${input.complaints.length} warning or error lines during the run; the first:`, '', '```', ...input.complaints.slice(0, 3).map((line) => line.slice(0, 600)), '```', '');
  }
  if (plan) lines.push('<details><summary>EXPLAIN (ANALYZE, BUFFERS) of callStats [MODEL, DAY]</summary>', '', '```', plan, '```', '', '</details>', '');
  return lines.join('\n');
}

try {
  await main();
} catch (error) {
  console.error('the bench failed:', error instanceof Error ? error.message : error);
  if (stack.server) console.error(`Callboard's last output:\n${stack.server.output.slice(-20).join('\n')}`);
  process.exitCode = 1;
} finally {
  if (!exiting) {
    exiting = true;
    log('stopping the children and dropping the bench database (DROP DATABASE waits for a checkpoint)');
    await cleanUp();
    log('children stopped, bench database dropped');
  }
}
process.exit(process.exitCode ?? 0);
