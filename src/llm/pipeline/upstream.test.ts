import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../config/config.ts';
import { CallboardError, ProviderError } from '../../errors.ts';
import type { CallBounds } from './bounds.ts';
import { createUpstream, isRetryable, toAttemptRow } from './upstream.ts';

/*
 * What the retry step adds to retry() (src/llm/retry.test.ts) that the flows' tests
 * (test/llm/retries.test.ts, test/e2e/api-errors.test.ts) do not reach: the classification of
 * errors without a status, each attempt's time budget, a wait for a free slot spending the call's
 * time, and the attempt rows.
 */

const settings = { ...loadConfig([], {}).config.openai, maxAttempts: 3, backoffJitter: 0 };
const noSleep = async () => {};

function bounds(deadlineMs: number, timeoutMs = 60_000): CallBounds {
  return { deadlineMs, deadline: performance.now() + deadlineMs, timeoutMs, maxAttempts: 3 };
}

describe('isRetryable', () => {
  it.each<[string, unknown, boolean]>([
    ['a timeout', new ProviderError('PROVIDER_TIMEOUT', 'timed out'), true],
    ['a connection error', new ProviderError('PROVIDER_UNAVAILABLE', 'ECONNREFUSED'), true],
    ['a stream cut before its first chunk', new ProviderError('STREAM_INTERRUPTED', 'cut'), true],
    ['a provider error without a status', new ProviderError('PROVIDER_ERROR', 'odd answer'), false],
    ['a 403', new ProviderError('PROVIDER_AUTH_FAILED', 'forbidden', { status: 403 }), false],
    ['a 404', new ProviderError('PROVIDER_NOT_FOUND', 'no such model', { status: 404 }), false],
    ['a 422', new ProviderError('PROVIDER_BAD_REQUEST', 'unprocessable', { status: 422 }), false],
    ['a timeout code carrying a 400', new ProviderError('PROVIDER_TIMEOUT', 'odd', { status: 400 }), false],
    ['an abort', new CallboardError('ABORTED', 'aborted'), false],
    ['a bug', new TypeError('x is undefined'), false],
  ])('%s: %s', (_name, error, retryable) => {
    expect(isRetryable(error)).toBe(retryable);
  });
});

describe('the retry step', () => {
  it("gives each attempt TIMEOUT, or the time left before the call's deadline when that is shorter, in whole milliseconds", async () => {
    const upstream = createUpstream({ redact: (value) => value, sleep: noSleep });
    const given: number[] = [];
    await upstream.call(settings, bounds(300_000, 2_000), async (_signal, timeoutMs) => given.push(timeoutMs), undefined);
    await upstream.call(settings, bounds(1_500.7, 60_000), async (_signal, timeoutMs) => given.push(timeoutMs), undefined);
    expect(given[0]).toBe(2_000);
    expect(Number.isInteger(given[1])).toBe(true);
    expect(given[1]).toBeGreaterThan(0);
    expect(given[1]).toBeLessThanOrEqual(1_500);
  });

  it('counts the wait for a free upstream slot in the call time: a call whose deadline passes in the queue never goes out', async () => {
    const upstream = createUpstream({ redact: (value) => value, sleep: noSleep });
    const oneSlot = { ...settings, maxConcurrentModelCalls: 1 };
    let release!: () => void;
    const sent: string[] = [];
    const first = upstream.call(
      oneSlot,
      bounds(60_000),
      () => {
        sent.push('first');
        return new Promise<string>((resolve) => (release = () => resolve('first answer')));
      },
      undefined,
    );
    const second = upstream.call(
      oneSlot,
      bounds(20),
      async () => {
        sent.push('second');
        return 'second answer';
      },
      undefined,
    );
    // The second call waits in the queue past its deadline; its turn comes once the first ends.
    await new Promise((resolve) => setTimeout(resolve, 40));
    release();
    const failure = (await second.catch((error: unknown) => error)) as CallboardError & { attempts: ReturnType<typeof toAttemptRow>[] };
    expect(failure.code).toBe('DEADLINE_EXCEEDED');
    expect(failure.attempts).toHaveLength(1);
    expect(failure.attempts[0]).toMatchObject({ number: 1, errorCode: 'PROVIDER_TIMEOUT', httpStatus: null });
    expect(failure.attempts[0]!.errorMessage).toContain('free upstream slot');
    expect(await first).toMatchObject({ value: 'first answer' });
    expect(sent).toEqual(['first']);
  });

  it('keeps every attempt, its secrets redacted, on the answer and on the final error', async () => {
    const upstream = createUpstream({ redact: <T>(value: T) => (typeof value === 'string' ? (value.replaceAll('sk-secret', '[REDACTED]') as T) : value), sleep: noSleep });
    let count = 0;
    const answered = await upstream.call(
      settings,
      bounds(60_000),
      async () => {
        count += 1;
        if (count === 1) throw new ProviderError('PROVIDER_UNAVAILABLE', 'bad gateway for key sk-secret', { status: 502, requestId: 'req_1' });
        return 'answer';
      },
      undefined,
    );
    expect(answered.value).toBe('answer');
    expect(answered.attempts).toMatchObject([
      { number: 1, httpStatus: 502, errorCode: 'PROVIDER_UNAVAILABLE', errorMessage: 'bad gateway for key [REDACTED]', requestId: 'req_1', waitMs: 1000 },
      { number: 2, httpStatus: 200, errorCode: null, errorMessage: null, requestId: null, waitMs: null },
    ]);

    const failure = (await upstream
      .call(settings, bounds(60_000), async () => Promise.reject(new ProviderError('PROVIDER_ERROR', 'boom with sk-secret', { status: 500 })), undefined)
      .catch((error: unknown) => error)) as CallboardError & { attempts: unknown[] };
    expect(failure.code).toBe('RETRY_EXHAUSTED');
    expect(failure.details).toEqual({ attempts: 3, lastErrorCode: 'PROVIDER_ERROR', lastStatus: 500 });
    expect(failure.attempts).toHaveLength(3);
    for (const row of failure.attempts) expect(row).toMatchObject({ errorMessage: 'boom with [REDACTED]', httpStatus: 500 });
  });
});

describe('toAttemptRow', () => {
  const startedAt = new Date('2025-01-01T00:00:00Z');
  it('records a success as HTTP 200 without an error', () => {
    expect(toAttemptRow({ number: 1, startedAt, latencyMs: 12.5 })).toEqual({ number: 1, startedAt, latencyMs: 12.5, httpStatus: 200, errorCode: null, errorMessage: null, waitMs: null, requestId: null });
  });

  it('records a failure that is not a provider error without a status, as an internal error, with its wait rounded', () => {
    expect(toAttemptRow({ number: 2, startedAt, latencyMs: 3, error: new TypeError('x is undefined'), waitMs: 999.6 })).toEqual({
      number: 2,
      startedAt,
      latencyMs: 3,
      httpStatus: null,
      errorCode: 'INTERNAL_SERVER_ERROR',
      errorMessage: 'x is undefined',
      waitMs: 1000,
      requestId: null,
    });
    expect(toAttemptRow({ number: 1, startedAt, latencyMs: 1, error: 'thrown text' })).toMatchObject({ errorCode: 'INTERNAL_SERVER_ERROR', errorMessage: 'thrown text', httpStatus: null });
    expect(toAttemptRow({ number: 1, startedAt, latencyMs: 1, error: new CallboardError('ABORTED', 'aborted') })).toMatchObject({ errorCode: 'ABORTED', httpStatus: null });
  });
});
