import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderSummary, summariseProfile, type CpuProfile } from './lib/cpu-profile.ts';
import { runLoad } from './lib/load.ts';
import { peerTarget } from './lib/peers.ts';
import { sleep } from './lib/measure.ts';
import { cpuTimeMs } from './lib/processes.ts';
import { buildLongText, createQuestions, primeCache, scenarios, type ScenarioContext, type ScenarioName } from './lib/scenarios.ts';
import { createStack, stackOptionsFromEnvironment } from './lib/stack.ts';
import { primeStreamedHit, runSeries, streamSeriesTitles, streamTargets, ttfbStats } from './lib/stream.ts';

// Usage: npx tsx bench/profile.ts <upstream|miss|rest-miss|hit|embedding|tokens> [connections=32] [seconds=8]
//        npx tsx bench/profile.ts <stream-miss|stream-hit> [requests=2000]
// Runs Callboard under `node --cpu-prof`, loads it with one scenario (or one series of the stream
// scenario, sequential streamed requests through the REST door), and summarises the samples taken
// during the measured run (start-up and warm-up left out) into bench/profiles/.

const streamSeriesNames = ['stream-miss', 'stream-hit'];
/** The REST door's cache miss, as the peers comparison sends it. */
const restMiss = { name: 'rest-miss', title: 'POST /v1/chat/completions, cache miss' };
const [scenarioArgument = 'hit', ...rest] = process.argv.slice(2);
if (!(scenarioArgument in scenarios) && !streamSeriesNames.includes(scenarioArgument) && scenarioArgument !== restMiss.name) {
  throw new Error(`unknown scenario "${scenarioArgument}"; one of ${[...Object.keys(scenarios), restMiss.name, ...streamSeriesNames].join(', ')}`);
}
const streamSeries = streamSeriesNames.includes(scenarioArgument) ? (scenarioArgument.slice('stream-'.length) as 'miss' | 'hit') : null;
const scenario = streamSeries
  ? { name: scenarioArgument, title: streamSeriesTitles[streamSeries] }
  : scenarioArgument === restMiss.name
    ? restMiss
    : scenarios[scenarioArgument as ScenarioName];
const [connectionsArgument = '32', secondsArgument = '8'] = streamSeries ? ['1'] : rest;
const connections = Number(connectionsArgument);
const seconds = Number(secondsArgument);
const streamRequests = Number(streamSeries ? (rest[0] ?? 2000) : 0);
const name = `${scenario.name}-c${connections}`;
const profilesDirectory = fileURLToPath(new URL('./profiles/', import.meta.url));
// Every thread of the server writes a profile (the tsx loader's too): each run gets a folder of its own.
const runDirectory = `${profilesDirectory}${name}/`;
rmSync(runDirectory, { recursive: true, force: true });
mkdirSync(runDirectory, { recursive: true });

const stack = createStack({
  ...stackOptionsFromEnvironment(process.env),
  serverNodeFlags: ['--cpu-prof', `--cpu-prof-dir=${runDirectory}`, '--cpu-prof-interval=250'],
});
process.on('SIGINT', () => void stack.close().finally(() => process.exit(130)));
setTimeout(() => void stack.close().finally(() => process.exit(1)), (seconds + streamRequests / 50 + 120) * 1000).unref();

try {
  const { server, upstream } = await stack.start();
  const context: ScenarioContext = {
    serverOrigin: server.origin,
    upstreamOrigin: upstream.url,
    longText: scenario.name === 'tokens' ? (await buildLongText(server.origin, 4000)).text : '',
    questions: createQuestions(),
  };
  await primeCache(context);
  let measure: () => Promise<{ responses: number; line: string }>;
  if (streamSeries) {
    const targets = streamTargets(context);
    const question = streamSeries === 'hit' ? await primeStreamedHit(context, targets) : null;
    const run = (requests: number, warmups: number) => runSeries(streamSeries, targets[streamSeries], question ? () => question : context.questions, { requests, warmups });
    await run(0, 300);
    measure = async () => {
      const series = await run(streamRequests, 0);
      const { p50, p95 } = ttfbStats(series);
      return {
        responses: series.requests,
        line: `${series.requests} sequential streamed responses, time to first content p50 ${p50.toFixed(2)} ms, p95 ${p95.toFixed(2)} ms, ${series.failures} failed. `,
      };
    };
  } else {
    const target =
      scenario === restMiss ? peerTarget('rest', server.origin, upstream.url, context.questions) : (scenario as (typeof scenarios)[ScenarioName]).target(context);
    await runLoad(target, { connections, seconds: 2 });
    measure = async () => {
      const load = await runLoad(target, { connections, seconds });
      return {
        responses: load.responses,
        line: `${load.responses} responses, ${load.requestsPerSecond.toFixed(0)} req/s, p50 ${load.p50Ms.toFixed(2)} ms, p99 ${load.p99Ms.toFixed(2)} ms, ${load.failures} failed. `,
      };
    };
  }
  await sleep(300);
  const pid = scenario.name === 'upstream' ? upstream.pid : server.pid;
  const cpuBefore = cpuTimeMs(pid);
  const fromMicros = Number(process.hrtime.bigint() / 1000n);
  const load = await measure();
  await sleep(300);
  const toMicros = Number(process.hrtime.bigint() / 1000n);
  const cpuMs = cpuTimeMs(pid) - cpuBefore;
  await stack.server?.stop();

  // Node names them CPU.<date>.<time>.<pid>.<thread id>.<sequence>.cpuprofile; the main thread's id is 0.
  const file = readdirSync(runDirectory).find((candidate) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(candidate));
  if (!file) throw new Error(`the server wrote no main-thread profile into ${runDirectory}`);
  const profilePath = `${runDirectory}${file}`;
  const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as CpuProfile;
  const summary = summariseProfile(profile, { fromMicros, toMicros });
  const heading =
    `## Profile: ${scenario.title}, ${connections} connection(s)${streamSeries ? '' : `, ${seconds} s`}\n\n` +
    load.line +
    `Process CPU (all threads, /proc) ${cpuMs.toFixed(0)} ms: ${(cpuMs / load.responses).toFixed(3)} ms/req (the profiler's own cost included).\n`;
  const text = `${heading}\n${renderSummary(summary, load.responses)}`;
  writeFileSync(`${profilesDirectory}${name}.md`, text);
  console.log(text);
  console.log(`profile: ${profilePath}\nsummary: ${profilesDirectory}${name}.md`);
} catch (error) {
  console.error('the profile run failed:', error instanceof Error ? error.message : error);
  if (stack.server) console.error(stack.server.output.slice(-20).join('\n'));
  process.exitCode = 1;
} finally {
  await stack.close();
}
process.exit(process.exitCode ?? 0);
