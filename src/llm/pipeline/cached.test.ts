import { describe, expect, it, vi } from 'vitest';
import { CallboardError } from '../../errors.ts';
import { createResponseCache, type CacheEntryValue } from '../cache.ts';
import type { CacheEntryRow } from '../cache-rows.ts';
import type { AttemptRow } from '../history.ts';
import type { CallBounds } from './bounds.ts';
import { createCacheStep, type Fresh, type LeaderGaveUp, type Served, type ServeOptions } from './cached.ts';

/*
 * The cache step over a real response cache (memory, single flight, lookups) whose database and
 * writer are stubs: what the step reads and writes is seen at that boundary.
 */

const key = 'k'.repeat(64);

function attempt(number: number, errorCode: string | null = null): AttemptRow {
  return { number, startedAt: new Date(0), latencyMs: 5, httpStatus: errorCode ? 500 : 200, errorCode, errorMessage: errorCode, waitMs: null, requestId: null };
}

function entry(response: string, overrides: Partial<CacheEntryValue> = {}): CacheEntryValue {
  return {
    key,
    kind: 'CHAT',
    apiType: 'openai',
    model: 'gpt-4o-mini',
    request: { model: 'gpt-4o-mini' },
    response,
    usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 },
    costUsd: '0.001',
    createdAt: new Date('2025-01-01T00:00:00Z'),
    expiresAt: null,
    createdByCallId: 'call-1',
    tenant: 'acme',
    apiKeyId: null,
    requestedAt: new Date('2025-01-01T00:00:00Z'),
    ...overrides,
  };
}

function rowOf(value: CacheEntryValue): CacheEntryRow {
  return { ...value, promptTokens: 3, completionTokens: 4, totalTokens: 7, createdAt: value.createdAt.toISOString(), expiresAt: null };
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const later = () => new Promise((resolve) => setTimeout(resolve, 5));

function bounds(deadlineMs = 60_000): CallBounds {
  return { deadlineMs, deadline: performance.now() + deadlineMs, timeoutMs: 30_000, maxAttempts: 3 };
}

/** A step over a real cache; `rows` answers the database's SELECT, or the query waits on `database` when set. */
function setup() {
  const saved: CacheEntryValue[] = [];
  const hits: string[] = [];
  const replaced: string[] = [];
  const state: { rows: CacheEntryRow[] | Error; gate: Promise<void> | null } = { rows: [], gate: null };
  const query = vi.fn(async (_sql: string, _params?: unknown[]) => {
    if (state.gate) await state.gate;
    if (state.rows instanceof Error) throw state.rows;
    return state.rows;
  });
  const cache = createResponseCache({
    database: { query: query as never },
    memoryEntries: 100,
    writer: { saveCacheEntry: (value) => void saved.push(value), recordCacheHit: (hitKey) => void hits.push(hitKey) },
  });
  const step = createCacheStep({ cache, entryReplaced: (replacedKey) => void replaced.push(replacedKey) });
  const upstreamCalls: (AbortSignal | undefined)[] = [];
  /** Upstream answers `answer` (or what `pending` resolves to) with one attempt. */
  const upstreamOf =
    (answer: string, pending?: Promise<Fresh<string>>) =>
    async (signal: AbortSignal | undefined): Promise<Fresh<string>> => {
      upstreamCalls.push(signal);
      return pending ?? { response: answer, attempts: [attempt(1)] };
    };
  const serve = (options: Partial<ServeOptions<string>> & Pick<ServeOptions<string>, 'mode'>): Promise<Served<string>> =>
    step.serve<string>({
      key,
      upstream: upstreamOf('fresh answer'),
      entryOf: (fresh) => entry(fresh.response, { createdByCallId: 'call-2' }),
      signal: undefined,
      bounds: bounds(),
      ...options,
    });
  return { cache, step, query, saved, hits, replaced, state, upstreamCalls, upstreamOf, serve };
}

describe('the cache step', () => {
  it('BYPASS: asks the provider with the caller signal, reads and stores nothing', async () => {
    const { serve, query, saved, hits, upstreamCalls, cache } = setup();
    cache.remember(entry('cached answer'));
    const signal = new AbortController().signal;
    const served = await serve({ mode: 'BYPASS', signal });
    expect(served).toEqual({ status: 'BYPASS', fresh: { response: 'fresh answer', attempts: [attempt(1)] }, cacheReadFailed: false });
    expect(upstreamCalls).toEqual([signal]);
    expect(query).not.toHaveBeenCalled();
    expect(saved).toEqual([]);
    expect(hits).toEqual([]);
    expect(cache.peek(key)!.response).toBe('cached answer');
  });

  it('REFRESH: asks the provider even with an entry in memory, replaces the entry, and tells every instance', async () => {
    const { serve, query, saved, hits, replaced, upstreamCalls, cache } = setup();
    cache.remember(entry('old answer'));
    const signal = new AbortController().signal;
    const served = await serve({ mode: 'REFRESH', signal });
    expect(served).toMatchObject({ status: 'REFRESH', fresh: { response: 'fresh answer' }, cacheReadFailed: false });
    expect(upstreamCalls).toEqual([signal]);
    expect(query).not.toHaveBeenCalled();
    expect(saved.map((value) => value.response)).toEqual(['fresh answer']);
    expect(cache.peek(key)!.response).toBe('fresh answer');
    expect(replaced).toEqual([key]);
    expect(hits).toEqual([]);
  });

  it('USE: answers a hit from memory without a database round trip or a provider call, and counts the hit', async () => {
    const { serve, query, hits, upstreamCalls, cache, saved } = setup();
    const remembered = entry('cached answer');
    cache.remember(remembered);
    expect(await serve({ mode: 'USE' })).toEqual({ status: 'HIT', entry: remembered });
    expect(query).not.toHaveBeenCalled();
    expect(upstreamCalls).toEqual([]);
    expect(hits).toEqual([key]);
    expect(saved).toEqual([]);
  });

  it('USE: answers a hit from the database, keeps it in memory, and counts the hit', async () => {
    const { serve, query, hits, upstreamCalls, cache, state, saved } = setup();
    state.rows = [rowOf(entry('stored answer'))];
    const served = await serve({ mode: 'USE' });
    expect(served).toMatchObject({ status: 'HIT', entry: { key, response: 'stored answer', usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 }, createdByCallId: 'call-1' } });
    expect(query).toHaveBeenCalledTimes(1);
    expect(query.mock.calls[0]![1]).toEqual([key]);
    expect(upstreamCalls).toEqual([]);
    expect(hits).toEqual([key]);
    expect(saved).toEqual([]);
    expect(cache.peek(key)!.response).toBe('stored answer');
  });

  it('USE: on a miss asks the provider without the caller signal (the request is shared) and stores the answer; the next call hits memory', async () => {
    const { serve, query, hits, upstreamCalls, saved } = setup();
    const signal = new AbortController().signal;
    expect(await serve({ mode: 'USE', signal })).toEqual({ status: 'MISS', fresh: { response: 'fresh answer', attempts: [attempt(1)] }, cacheReadFailed: false });
    expect(upstreamCalls).toEqual([undefined]);
    expect(saved.map((value) => value.response)).toEqual(['fresh answer']);
    expect(hits).toEqual([]);

    const again = await serve({ mode: 'USE' });
    expect(again).toMatchObject({ status: 'HIT', entry: { response: 'fresh answer', createdByCallId: 'call-2' } });
    expect(query).toHaveBeenCalledTimes(1);
    expect(upstreamCalls).toHaveLength(1);
    expect(hits).toEqual([key]);
  });

  it('USE: stores nothing when the answer makes no entry', async () => {
    const { serve, saved, cache } = setup();
    expect(await serve({ mode: 'USE', entryOf: () => null })).toMatchObject({ status: 'MISS' });
    expect(saved).toEqual([]);
    expect(cache.peek(key)).toBeUndefined();
  });

  it('USE: asks the provider when the database cannot be read, and says the read failed', async () => {
    const { serve, state, saved } = setup();
    state.rows = new Error('connection refused');
    expect(await serve({ mode: 'USE' })).toMatchObject({ status: 'MISS', fresh: { response: 'fresh answer' }, cacheReadFailed: true });
    expect(saved).toHaveLength(1);
  });

  it('USE: 10 concurrent callers of one key make one lookup and one provider call: one MISS and 9 HITs', async () => {
    const { serve, query, hits, upstreamCalls, upstreamOf, saved } = setup();
    const answer = deferred<Fresh<string>>();
    const upstream = upstreamOf('unused', answer.promise);
    const calls = Array.from({ length: 10 }, () => serve({ mode: 'USE', upstream }));
    await later();
    expect(upstreamCalls).toHaveLength(1);
    answer.resolve({ response: 'shared answer', attempts: [attempt(1)] });
    const served = await Promise.all(calls);

    expect(served.filter((result) => result.status === 'MISS')).toHaveLength(1);
    const hitEntries = served.filter((result) => result.status === 'HIT').map((result) => (result as { entry: CacheEntryValue }).entry.response);
    expect(hitEntries).toEqual(Array(9).fill('shared answer'));
    expect(upstreamCalls).toHaveLength(1);
    expect(query).toHaveBeenCalledTimes(1);
    expect(saved).toHaveLength(1);
    expect(hits).toEqual(Array(9).fill(key));
  });

  it('USE: rethrows a shared request failure to every caller, stores nothing, and the next call tries again', async () => {
    const { serve, upstreamCalls, upstreamOf, saved } = setup();
    const answer = deferred<Fresh<string>>();
    const failure = Object.assign(new CallboardError('RETRY_EXHAUSTED', 'Gave up after 3 attempts'), { attempts: [attempt(1, 'PROVIDER_ERROR')] });
    const calls = Array.from({ length: 10 }, () => serve({ mode: 'USE', upstream: upstreamOf('unused', answer.promise) }));
    await later();
    answer.reject(failure);
    const outcomes = await Promise.allSettled(calls);
    for (const outcome of outcomes) expect(outcome).toEqual({ status: 'rejected', reason: failure });
    expect(upstreamCalls).toHaveLength(1);
    expect(saved).toEqual([]);

    expect(await serve({ mode: 'USE' })).toMatchObject({ status: 'MISS', fresh: { response: 'fresh answer' } });
    expect(upstreamCalls).toHaveLength(2);
  });

  it('USE: a leader that aborts gets ABORTED at once, with the attempts of the shared request once it ends; the others get the answer', async () => {
    const { serve, upstreamCalls, upstreamOf, saved } = setup();
    const answer = deferred<Fresh<string>>();
    const upstream = upstreamOf('unused', answer.promise);
    const leaderAbort = new AbortController();
    const leader = serve({ mode: 'USE', upstream, signal: leaderAbort.signal });
    const followers = Array.from({ length: 3 }, () => serve({ mode: 'USE', upstream }));
    await later();
    expect(upstreamCalls).toEqual([undefined]);

    leaderAbort.abort();
    const gaveUp = (await leader.catch((error: unknown) => error)) as LeaderGaveUp<string> & CallboardError;
    expect(gaveUp.code).toBe('ABORTED');
    expect(gaveUp.sharedOutcome).toBeInstanceOf(Promise);
    let outcome: unknown;
    void gaveUp.sharedOutcome!.then((value) => (outcome = value));
    await later();
    expect(outcome).toBeUndefined();

    answer.resolve({ response: 'shared answer', attempts: [attempt(1, 'PROVIDER_ERROR'), attempt(2)] });
    expect(await gaveUp.sharedOutcome).toEqual({ attempts: [attempt(1, 'PROVIDER_ERROR'), attempt(2)], response: 'shared answer' });
    for (const follower of await Promise.all(followers)) expect(follower).toMatchObject({ status: 'HIT', entry: { response: 'shared answer' } });
    expect(saved).toHaveLength(1);
  });

  it('USE: a leader that aborted gets the attempts of a shared request that failed, and no answer', async () => {
    const { serve, upstreamOf } = setup();
    const answer = deferred<Fresh<string>>();
    const leaderAbort = new AbortController();
    const leader = serve({ mode: 'USE', upstream: upstreamOf('unused', answer.promise), signal: leaderAbort.signal });
    await later();
    leaderAbort.abort();
    const gaveUp = (await leader.catch((error: unknown) => error)) as LeaderGaveUp<string>;
    answer.reject(Object.assign(new CallboardError('RETRY_EXHAUSTED', 'Gave up'), { attempts: [attempt(1, 'PROVIDER_ERROR'), attempt(2, 'PROVIDER_ERROR')] }));
    expect(await gaveUp.sharedOutcome).toEqual({ attempts: [attempt(1, 'PROVIDER_ERROR'), attempt(2, 'PROVIDER_ERROR')], response: null });
  });

  it('USE: a leader that aborts while the database is read still gets the attempts the shared request makes after', async () => {
    const { serve, upstreamCalls, state } = setup();
    const database = deferred<void>();
    state.gate = database.promise;
    const leaderAbort = new AbortController();
    const leader = serve({ mode: 'USE', signal: leaderAbort.signal });
    const follower = serve({ mode: 'USE' });
    await later();
    leaderAbort.abort();
    const gaveUp = (await leader.catch((error: unknown) => error)) as LeaderGaveUp<string> & CallboardError;
    expect(gaveUp.code).toBe('ABORTED');
    expect(upstreamCalls).toEqual([]);

    database.resolve();
    expect(await follower).toMatchObject({ status: 'HIT', entry: { response: 'fresh answer' } });
    // The provider was asked for the leader's call after it gave up: its row must still hold that attempt.
    expect(upstreamCalls).toHaveLength(1);
    expect(await gaveUp.sharedOutcome).toEqual({ attempts: [attempt(1)], response: 'fresh answer' });
  });

  it('USE: a follower that aborts gets ABORTED, with no shared outcome of its own, and the request goes on', async () => {
    const { serve, upstreamOf } = setup();
    const answer = deferred<Fresh<string>>();
    const upstream = upstreamOf('unused', answer.promise);
    const leader = serve({ mode: 'USE', upstream });
    const followerAbort = new AbortController();
    const follower = serve({ mode: 'USE', upstream, signal: followerAbort.signal });
    await later();
    followerAbort.abort();
    const gaveUp = (await follower.catch((error: unknown) => error)) as LeaderGaveUp<string> & CallboardError;
    expect(gaveUp.code).toBe('ABORTED');
    expect(gaveUp.sharedOutcome).toBeUndefined();
    answer.resolve({ response: 'shared answer', attempts: [attempt(1)] });
    expect(await leader).toMatchObject({ status: 'MISS', fresh: { response: 'shared answer' } });
  });

  it('USE: refuses a caller whose signal aborted before it came, without reading the database or asking the provider', async () => {
    const { serve, upstreamCalls, query, saved } = setup();
    const aborted = new AbortController();
    aborted.abort();
    const refused = (await serve({ mode: 'USE', signal: aborted.signal }).catch((error: unknown) => error)) as LeaderGaveUp<string> & CallboardError;
    expect(refused.code).toBe('ABORTED');
    expect(refused.sharedOutcome).toBeUndefined();
    await later();
    expect(query).not.toHaveBeenCalled();
    expect(upstreamCalls).toEqual([]);
    expect(saved).toEqual([]);
  });

  it("USE: a follower whose deadline comes while it waits on another call's request gets DEADLINE_EXCEEDED; the leader waits for its own request", async () => {
    const { serve, upstreamOf } = setup();
    const answer = deferred<Fresh<string>>();
    const upstream = upstreamOf('unused', answer.promise);
    // The leader's own deadline passes too: its request ends at its deadline by itself (the retry step), not here.
    const leader = serve({ mode: 'USE', upstream, bounds: bounds(20) });
    await later();
    const follower = serve({ mode: 'USE', upstream, bounds: bounds(20) });
    const refused = (await follower.catch((error: unknown) => error)) as LeaderGaveUp<string> & CallboardError;
    expect(refused.code).toBe('DEADLINE_EXCEEDED');
    expect(refused.details).toMatchObject({ deadlineSeconds: 0.02, attempts: 0 });
    expect(refused.sharedOutcome).toBeUndefined();

    await new Promise((resolve) => setTimeout(resolve, 30));
    answer.resolve({ response: 'late answer', attempts: [attempt(1)] });
    expect(await leader).toMatchObject({ status: 'MISS', fresh: { response: 'late answer' } });
  });
});
