import { Agent, request } from 'node:http';
import type pg from 'pg';
import { percentile } from './load.ts';
import { awaitHistory, awaitQuietHistory, historyRows, sleep } from './measure.ts';
import { doorStreamBody, expectedAnswer, upstreamStreamBody, type ScenarioContext } from './scenarios.ts';

/** The bench scenario (a name of BENCH_SCENARIOS) that measures streamed answers' time to first byte. */
export const streamScenarioName = 'stream';

export type StreamSeriesName = 'direct' | 'miss' | 'hit';

export const streamSeriesTitles: Record<StreamSeriesName, string> = {
  direct: 'upstream direct, streamed (floor)',
  miss: 'REST door, streamed, cache miss',
  hit: 'REST door, streamed, cache hit',
};

export interface StreamSeries {
  name: StreamSeriesName;
  title: string;
  /** Timed requests that answered as expected. */
  requests: number;
  failures: number;
  firstFailure: string | null;
  /** From sending the request to the first event with content, ascending, in milliseconds. */
  ttfbMs: number[];
  /** From sending the request to the end of the body, ascending. */
  totalMs: number[];
  /** The timed requests' x-callboard-call-id (Callboard's series) with their time to first content, to find their history rows. */
  calls: { id: string; ttfbMs: number }[];
}

/**
 * Where a streamed miss spends its time, from Callboard's own history rows of the timed requests
 * (medians of per-request values, in milliseconds).
 */
export interface MissPhases {
  calls: number;
  /** From the call's start (after the body was read) to its first chunk handed to the door: timeToFirstTokenMs. */
  firstChunkMs: number;
  /** Of which the upstream attempt: from its request going out to the provider's first chunk, through the openai SDK. */
  attemptMs: number;
  /** Of which the rest: limits, cache lookup, the request built, the stream set up (firstChunkMs - attemptMs). */
  beforeUpstreamMs: number;
  /** Outside the pipeline: the client's time to first content minus firstChunkMs (HTTP serving, the body read, the first events written, loopback). */
  outsideMs: number;
}

export interface StreamReport {
  requests: number;
  warmups: number;
  series: StreamSeries[];
  /** Responses of the Callboard series (warm-ups included) whose history row had not appeared when the wait gave up. */
  historyMissing: number;
  /** null when there is no history to read (or it could not be read). */
  missPhases: MissPhases | null;
}

const mean = (values: readonly number[]) => (values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length);

/** p50, p95 and mean of a series' time to first byte. */
export function ttfbStats(series: StreamSeries): { p50: number; p95: number; mean: number } {
  return { p50: percentile(series.ttfbMs, 0.5), p95: percentile(series.ttfbMs, 0.95), mean: mean(series.ttfbMs) };
}

export interface StreamTarget {
  url: string;
  headers: Record<string, string>;
  /** One keep-alive connection, reused by every request of the series. */
  agent: Agent;
  /** The x-callboard-cache-status the answer must carry (undefined: the upstream's, which has none). */
  cacheStatus: string | undefined;
}

interface StreamAnswer {
  ttfbMs: number;
  totalMs: number;
  callId: string | undefined;
  /** Why the answer is not the one expected; null when it is. */
  failure: string | null;
}

/** Whether one SSE event (its lines, without the blank line that ends it) carries content in its first choice. */
function carriesContent(event: string): boolean {
  for (const line of event.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (data === '[DONE]') return false;
    const content = (JSON.parse(data) as { choices?: { delta?: { content?: unknown } }[] }).choices?.[0]?.delta?.content;
    return typeof content === 'string' && content !== '';
  }
  return false;
}

/** Why a whole event stream is not the expected answer ended by [DONE], or null. */
function streamFailure(body: string, expected: string): string | null {
  const events = body.split('\n\n').filter((event) => event.trim() !== '');
  if (events.at(-1)?.trim() !== 'data: [DONE]') return `the stream did not end with [DONE]: ${body.slice(-300)}`;
  let content = '';
  for (const event of events.slice(0, -1)) {
    const parsed = JSON.parse(event.replace(/^data:\s*/, '')) as { error?: unknown; choices?: { delta?: { content?: string | null } }[] };
    if (parsed.error) return `an error event: ${event.slice(0, 300)}`;
    content += parsed.choices?.[0]?.delta?.content ?? '';
  }
  return content === expected ? null : `the answer was "${content.slice(0, 200)}", not "${expected.slice(0, 200)}"`;
}

/**
 * One streamed request with node's http client: times the first event carrying content as the body
 * arrives (events are scanned only until then), then reads the body to its end, so that the
 * keep-alive connection is free for the next request, and checks the whole answer.
 */
function streamOnce(target: StreamTarget, body: string, expected: string): Promise<StreamAnswer> {
  return new Promise((resolve) => {
    const started = performance.now();
    let firstContentAt: number | null = null;
    const fail = (failure: string) => resolve({ ttfbMs: Number.NaN, totalMs: performance.now() - started, callId: undefined, failure });
    const outgoing = request(
      target.url,
      { method: 'POST', agent: target.agent, headers: { ...target.headers, 'content-length': Buffer.byteLength(body) }, timeout: 30_000 },
      (response) => {
        let text = '';
        let scanned = 0;
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
          for (let end = text.indexOf('\n\n', scanned); firstContentAt === null && end >= 0; end = text.indexOf('\n\n', scanned)) {
            if (carriesContent(text.slice(scanned, end))) firstContentAt = performance.now();
            scanned = end + 2;
          }
        });
        response.on('error', (error) => fail(error.message));
        response.on('end', () => {
          const totalMs = performance.now() - started;
          const cacheStatus = response.headers['x-callboard-cache-status'];
          const failure =
            response.statusCode !== 200
              ? `status ${response.statusCode}: ${text.slice(0, 300)}`
              : cacheStatus !== target.cacheStatus
                ? `x-callboard-cache-status ${String(cacheStatus)}, expected ${String(target.cacheStatus)}`
                : firstContentAt === null
                  ? `no event carried content: ${text.slice(0, 300)}`
                  : streamFailure(text, expected);
          const callId = response.headers['x-callboard-call-id'];
          resolve({ ttfbMs: firstContentAt === null ? Number.NaN : firstContentAt - started, totalMs, callId: typeof callId === 'string' ? callId : undefined, failure });
        });
      },
    );
    outgoing.on('socket', (socket) => socket.setNoDelay(true));
    outgoing.on('timeout', () => outgoing.destroy(new Error('no answer in 30 s')));
    outgoing.on('error', (error) => fail(error.message));
    outgoing.end(body);
  });
}

const emptySeries = (name: StreamSeriesName): StreamSeries => ({ name, title: streamSeriesTitles[name], requests: 0, failures: 0, firstFailure: null, ttfbMs: [], totalMs: [], calls: [] });

/** One request of a series; a timed one is added to it, a warm-up that fails stops the bench. */
async function ask(series: StreamSeries, target: StreamTarget, question: string, timed: boolean): Promise<void> {
  const body = series.name === 'direct' ? upstreamStreamBody(question) : doorStreamBody(question);
  const answer = await streamOnce(target, JSON.stringify(body), expectedAnswer(question));
  if (!timed) {
    if (answer.failure) throw new Error(`${series.title}: a warm-up request failed: ${answer.failure}`);
    return;
  }
  if (answer.failure) {
    series.failures += 1;
    series.firstFailure ??= answer.failure;
    return;
  }
  series.requests += 1;
  series.ttfbMs.push(answer.ttfbMs);
  series.totalMs.push(answer.totalMs);
  if (answer.callId) series.calls.push({ id: answer.callId, ttfbMs: answer.ttfbMs });
}

function sorted(series: StreamSeries): StreamSeries {
  series.ttfbMs.sort((a, b) => a - b);
  series.totalMs.sort((a, b) => a - b);
  return series;
}

/** One series alone: `warmups` untimed requests, then `requests` timed ones, one at a time (for the profiler). */
export async function runSeries(name: StreamSeriesName, target: StreamTarget, question: () => string, options: { requests: number; warmups: number }): Promise<StreamSeries> {
  const series = emptySeries(name);
  for (let index = 0; index < options.warmups + options.requests; index++) await ask(series, target, question(), index >= options.warmups);
  return sorted(series);
}

/** Each series' target, with a keep-alive connection of its own; `destroy()` closes them. */
export function streamTargets(context: ScenarioContext): Record<StreamSeriesName, StreamTarget> & { destroy(): void } {
  const agent = () => new Agent({ keepAlive: true, maxSockets: 1 });
  const json = { 'content-type': 'application/json' };
  // The cache is off by default ([OpenAI] CACHE_API_CALLS=False): the header turns it on, as a caller would.
  const door = (cacheStatus: string): StreamTarget => ({
    url: `${context.serverOrigin}/v1/chat/completions`,
    headers: { ...json, 'x-callboard-cache': 'use', 'x-callboard-tags': 'bench' },
    agent: agent(),
    cacheStatus,
  });
  const targets = {
    direct: { url: `${context.upstreamOrigin}/v1/chat/completions`, headers: { ...json, authorization: 'Bearer sk-bench-0000000000000000' }, agent: agent(), cacheStatus: undefined },
    miss: door('MISS'),
    hit: door('HIT'),
  };
  return {
    ...targets,
    destroy: () => {
      for (const target of Object.values(targets)) target.agent.destroy();
    },
  };
}

/** The question the hit series asks over and over, asked once (a miss) so that the cache holds its answer. */
export async function primeStreamedHit(context: ScenarioContext, targets: Record<StreamSeriesName, StreamTarget>): Promise<string> {
  const question = context.questions();
  const primed = await streamOnce(targets.miss, JSON.stringify(doorStreamBody(question)), expectedAnswer(question));
  if (primed.failure) throw new Error(`the first streamed call of the hit question failed: ${primed.failure}`);
  return question;
}

const medianOf = (values: number[]) => percentile(values.sort((a, b) => a - b), 0.5);

/** The miss series' phases from its history rows; null when they cannot be read (another schema). */
async function missPhases(history: pg.Client, series: StreamSeries): Promise<MissPhases | null> {
  const ttfbOf = new Map(series.calls.map((call) => [call.id, call.ttfbMs]));
  try {
    const { rows } = await history.query<{ id: string; firstChunkMs: number | null; attemptMs: number }>(
      `SELECT c.id, c."timeToFirstTokenMs" AS "firstChunkMs", a."latencyMs" AS "attemptMs"
         FROM "LlmCall" c JOIN "LlmAttempt" a ON a."callId" = c.id AND a.number = c."attemptCount"
        WHERE c.id = ANY($1::uuid[]) AND c."timeToFirstTokenMs" IS NOT NULL`,
      [[...ttfbOf.keys()]],
    );
    if (rows.length === 0) return null;
    return {
      calls: rows.length,
      firstChunkMs: medianOf(rows.map((row) => row.firstChunkMs!)),
      attemptMs: medianOf(rows.map((row) => row.attemptMs)),
      beforeUpstreamMs: medianOf(rows.map((row) => row.firstChunkMs! - row.attemptMs)),
      outsideMs: medianOf(rows.map((row) => ttfbOf.get(row.id)! - row.firstChunkMs!)),
    };
  } catch {
    return null;
  }
}

/** Requests of one series in a row before the next series takes its turn. */
const streamBlock = 50;
/** Longer than the history's flush interval (50 ms). */
const blockPauseMs = 150;

/**
 * Time to first byte of streamed chat answers at 1 connection: the fake upstream called directly
 * with the body Callboard sends it; Callboard's REST door with the cache on and a new question per
 * request (MISS: cache lookup, upstream stream, cache entry and history row); and the door with one
 * question over and over (HIT, replayed from the cache). Each series runs as consecutive requests of
 * its kind, so that what a request leaves Callboard to do (its history row, the cache entry, garbage)
 * weighs on the next one of the same kind, as it would for a caller sending them in a row. The
 * series take turns in blocks of `streamBlock`, so that the machine's load, which changes while
 * the bench runs, weighs on them alike. Each has a keep-alive connection of its own. The run starts
 * once the history has written the backlog of what ran before, and ends once it holds a row per
 * Callboard response.
 */
export async function measureStreaming(
  context: ScenarioContext,
  options: { requests: number; warmups: number; history: pg.Client | null },
): Promise<StreamReport> {
  const targets = streamTargets(context);
  const { history } = options;
  const series = { direct: emptySeries('direct'), miss: emptySeries('miss'), hit: emptySeries('hit') };
  let historyMissing = 0;
  let phases: MissPhases | null = null;
  try {
    const fixed = await primeStreamedHit(context, targets);
    if (history) await awaitQuietHistory(history);
    const rowsBefore = history ? await historyRows(history) : 0;
    const questions = { direct: context.questions, miss: context.questions, hit: () => fixed };
    for (const [phase, total] of [['warm-up', options.warmups], ['timed', options.requests]] as const) {
      for (let done = 0; done < total; done += streamBlock) {
        for (const name of ['direct', 'miss', 'hit'] as const) {
          // Callboard's write-behind of the block before (its history batches) is not charged to this one.
          await sleep(blockPauseMs);
          for (let index = done; index < Math.min(total, done + streamBlock); index++) await ask(series[name], targets[name], questions[name](), phase === 'timed');
        }
      }
    }
    if (history) {
      historyMissing = await awaitHistory(history, rowsBefore + 2 * (options.warmups + options.requests));
      phases = await missPhases(history, series.miss);
    }
  } finally {
    targets.destroy();
  }
  return { requests: options.requests, warmups: options.warmups, series: [series.direct, series.miss, series.hit].map(sorted), historyMissing, missPhases: phases };
}
