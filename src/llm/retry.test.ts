import { describe, expect, it, vi } from 'vitest';
import { exponentialBackoff, retry, type AttemptRecord, type RetryOptions } from './retry.ts';

class FakeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly retryAfterMs?: number,
  ) {
    super(`HTTP ${status}`);
  }
}

/** A clock that only moves when the code under test sleeps, so no test ever really waits. */
function fakeClock() {
  let time = 0;
  const waits: number[] = [];
  return {
    waits,
    now: () => time,
    advance: (ms: number) => {
      time += ms;
    },
    sleep: async (ms: number) => {
      waits.push(ms);
      time += ms;
    },
  };
}

/** TinyTroupe's shipped config: WAITING_TIME=1 s, EXPONENTIAL_BACKOFF_FACTOR=5, with Callboard's 60 s cap. */
const tinyTroupeBackoff = () => exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: 60_000, jitter: 0 });

const retryOnRateLimit: RetryOptions['shouldRetry'] = (error) => error instanceof FakeHttpError && error.status !== 400;

/** An operation that fails with the given errors in turn, then returns `value`. */
function scripted<T>(errors: unknown[], value: T, clock?: ReturnType<typeof fakeClock>, latencyMs = 0) {
  const calls: number[] = [];
  const operation = async (attempt: number): Promise<T> => {
    calls.push(attempt);
    clock?.advance(latencyMs);
    const error = errors[attempt - 1];
    if (error !== undefined) throw error;
    return value;
  };
  return { operation, calls };
}

describe('exponentialBackoff', () => {
  it('follows the TinyTroupe schedule (1 s, x5) up to the cap', () => {
    const delay = tinyTroupeBackoff();
    const error = new FakeHttpError(429);
    expect([1, 2, 3, 4, 5, 6, 40, 2000].map((attempt) => delay(attempt, error))).toEqual([1000, 5000, 25_000, 60_000, 60_000, 60_000, 60_000, 60_000]);
  });

  it('with jitter only shortens the wait, by at most the jitter fraction', () => {
    const low = exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: 60_000, jitter: 0.5, random: () => 0 });
    const high = exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: 60_000, jitter: 0.5, random: () => 0.999_999 });
    expect(low(1, undefined)).toBe(1000);
    expect(high(1, undefined)).toBeCloseTo(500, 2);
    expect(low(4, undefined)).toBe(60_000);
    expect(high(4, undefined)).toBeCloseTo(30_000, 1);

    const real = exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: 60_000, jitter: 0.25 });
    for (let index = 0; index < 200; index++) {
      const attempt = (index % 6) + 1;
      const exact = Math.min(60_000, 1000 * 5 ** (attempt - 1));
      const wait = real(attempt, undefined);
      expect(wait).toBeLessThanOrEqual(exact);
      expect(wait).toBeGreaterThan(exact * 0.75);
    }
  });

  it('waits exactly the Retry-After within the cap, without jitter', () => {
    const delay = exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: 60_000, jitter: 1, random: () => 0.5 });
    expect(delay(1, new FakeHttpError(429, 7_500))).toBe(7_500);
    expect(delay(3, new FakeHttpError(429, 0))).toBe(0);
    expect(delay(1, new FakeHttpError(429, 60_000))).toBe(60_000);
  });

  it('returns a Retry-After over the cap as asked, for the loop to refuse rather than retry too soon', () => {
    const delay = tinyTroupeBackoff();
    expect(delay(2, new FakeHttpError(429, 60_001))).toBe(60_001);
    expect(delay(2, new FakeHttpError(429, 3_600_000))).toBe(3_600_000);
  });

  it('ignores a Retry-After that is negative or not a number, and uses the backoff', () => {
    const delay = tinyTroupeBackoff();
    expect(delay(2, new FakeHttpError(429, -1))).toBe(5000);
    expect(delay(2, { retryAfterMs: '2000' })).toBe(5000);
    expect(delay(2, { retryAfterMs: Number.NaN })).toBe(5000);
    expect(delay(2, 'a string error')).toBe(5000);
    expect(delay(2, null)).toBe(5000);
  });

  it('rejects options it cannot honour', () => {
    expect(() => exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: 60_000, jitter: 1.5 })).toThrow(RangeError);
    expect(() => exponentialBackoff({ initialMs: -1, factor: 5, maxMs: 60_000, jitter: 0 })).toThrow(RangeError);
    expect(() => exponentialBackoff({ initialMs: 1000, factor: 0, maxMs: 60_000, jitter: 0 })).toThrow(RangeError);
    expect(() => exponentialBackoff({ initialMs: 1000, factor: 5, maxMs: Number.NaN, jitter: 0 })).toThrow(RangeError);
  });
});

describe('retry', () => {
  it('returns the value of a first successful attempt without sleeping', async () => {
    const clock = fakeClock();
    const { operation, calls } = scripted([], 'hello', clock, 120);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now });
    expect(outcome).toMatchObject({ ok: true, value: 'hello' });
    expect(calls).toEqual([1]);
    expect(clock.waits).toEqual([]);
    expect(outcome.attempts).toHaveLength(1);
    expect(outcome.attempts[0]).toMatchObject({ number: 1, latencyMs: 120 });
    expect(outcome.attempts[0]).not.toHaveProperty('error');
    expect(outcome.attempts[0]).not.toHaveProperty('waitMs');
    expect(outcome.attempts[0]?.startedAt).toBeInstanceOf(Date);
  });

  it('retries on the TinyTroupe schedule and records every attempt with the wait that followed', async () => {
    const clock = fakeClock();
    const errors = [new FakeHttpError(429), new FakeHttpError(503), new FakeHttpError(429)];
    const { operation, calls } = scripted(errors, { content: 'ok' }, clock, 40);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now });

    expect(outcome).toMatchObject({ ok: true, value: { content: 'ok' } });
    expect(calls).toEqual([1, 2, 3, 4]);
    expect(clock.waits).toEqual([1000, 5000, 25_000]);
    expect(outcome.attempts.map(({ number, error, waitMs, latencyMs }) => ({ number, error, waitMs, latencyMs }))).toEqual([
      { number: 1, error: errors[0], waitMs: 1000, latencyMs: 40 },
      { number: 2, error: errors[1], waitMs: 5000, latencyMs: 40 },
      { number: 3, error: errors[2], waitMs: 25_000, latencyMs: 40 },
      { number: 4, error: undefined, waitMs: undefined, latencyMs: 40 },
    ]);
  });

  it('gives up after maxAttempts retryable errors, with no sleep after the last', async () => {
    const clock = fakeClock();
    const errors = Array.from({ length: 5 }, () => new FakeHttpError(429));
    const { operation, calls } = scripted(errors, 'never', clock);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now });

    expect(outcome).toMatchObject({ ok: false, error: errors[4], exhausted: true, aborted: false });
    expect(calls).toEqual([1, 2, 3, 4, 5]);
    // TinyTroupe would sleep 1+5+25+125+625 s here; the cap keeps it to 91 s.
    expect(clock.waits).toEqual([1000, 5000, 25_000, 60_000]);
    expect(outcome.attempts).toHaveLength(5);
    expect(outcome.attempts[4]?.waitMs).toBeUndefined();
  });

  it('stops at once on an error shouldRetry refuses', async () => {
    const clock = fakeClock();
    const badRequest = new FakeHttpError(400);
    const shouldRetry = vi.fn(retryOnRateLimit);
    const { operation, calls } = scripted([badRequest], 'never', clock);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now });

    expect(outcome).toMatchObject({ ok: false, error: badRequest, exhausted: false, aborted: false });
    expect(calls).toEqual([1]);
    expect(clock.waits).toEqual([]);
    expect(shouldRetry).toHaveBeenCalledWith(badRequest, 1);
    expect(outcome.attempts).toEqual([{ number: 1, startedAt: expect.any(Date), latencyMs: 0, error: badRequest }]);
  });

  it('reports a refused error on the last attempt as not exhausted', async () => {
    const clock = fakeClock();
    const errors = [new FakeHttpError(429), new FakeHttpError(400)];
    const { operation } = scripted(errors, 'never', clock);
    const outcome = await retry(operation, { maxAttempts: 2, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep });
    expect(outcome).toMatchObject({ ok: false, error: errors[1], exhausted: false, aborted: false });
  });

  it('makes a single attempt when maxAttempts is 1', async () => {
    const clock = fakeClock();
    const { operation, calls } = scripted([new FakeHttpError(429)], 'never', clock);
    const outcome = await retry(operation, { maxAttempts: 1, shouldRetry: () => true, delay: tinyTroupeBackoff(), sleep: clock.sleep });
    expect(outcome).toMatchObject({ ok: false, exhausted: true, aborted: false });
    expect(calls).toEqual([1]);
    expect(clock.waits).toEqual([]);
  });

  it('honours a Retry-After within the cap', async () => {
    const clock = fakeClock();
    const errors = [new FakeHttpError(429, 2_500), new FakeHttpError(503), new FakeHttpError(429, 0)];
    const { operation } = scripted(errors, 'ok', clock);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep, maxWaitMs: 60_000 });
    expect(outcome.ok).toBe(true);
    expect(clock.waits).toEqual([2_500, 5000, 0]);
  });

  it('stops at once, without sleeping, on a Retry-After longer than maxWaitMs', async () => {
    const clock = fakeClock();
    const tooLong = new FakeHttpError(429, 120_000);
    const { operation, calls } = scripted([new FakeHttpError(429, 1_000), tooLong], 'never', clock, 30);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now, maxWaitMs: 60_000 });
    expect(outcome).toMatchObject({ ok: false, error: tooLong, exhausted: false, aborted: false, deadlineExceeded: false, refusedWaitMs: 120_000 });
    expect(calls).toEqual([1, 2]);
    expect(clock.waits).toEqual([1_000]);
    expect(outcome.attempts.map((attempt) => [attempt.number, attempt.error, attempt.waitMs])).toEqual([
      [1, expect.any(FakeHttpError), 1_000],
      [2, tooLong, undefined],
    ]);
  });

  it('stops at once on a Retry-After within the cap but past the deadline', async () => {
    const clock = fakeClock();
    const errors = [new FakeHttpError(429, 40_000)];
    const { operation, calls } = scripted(errors, 'never', clock, 1_000);
    // 30 s for the whole call: the server's 40 s would end after it.
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now, maxWaitMs: 60_000, deadline: 30_000 });
    expect(outcome).toMatchObject({ ok: false, error: errors[0], deadlineExceeded: true, refusedWaitMs: 40_000, exhausted: false });
    expect(calls).toEqual([1]);
    expect(clock.waits).toEqual([]);
    expect(outcome.attempts).toHaveLength(1);
  });

  it('bounds the whole call by the deadline: no backoff that would end after it, every attempt recorded', async () => {
    const clock = fakeClock();
    const errors = Array.from({ length: 5 }, () => new FakeHttpError(503));
    const { operation, calls } = scripted(errors, 'never', clock, 2_000);
    // Attempt 1 ends at 2 s, waits 1 s; attempt 2 ends at 5 s, waits 5 s; attempt 3 ends at 12 s and the 25 s wait would pass 20 s.
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now, deadline: 20_000 });
    expect(outcome).toMatchObject({ ok: false, error: errors[2], exhausted: false, aborted: false, deadlineExceeded: true, refusedWaitMs: 25_000 });
    expect(calls).toEqual([1, 2, 3]);
    expect(clock.waits).toEqual([1_000, 5_000]);
    expect(outcome.attempts.map((attempt) => attempt.waitMs)).toEqual([1_000, 5_000, undefined]);
  });

  it('stops when an attempt fails at or after the deadline, with that attempt and its error recorded', async () => {
    const clock = fakeClock();
    const timeout = new FakeHttpError(408);
    const { operation, calls } = scripted([new FakeHttpError(503), timeout], 'never', clock, 10_000);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: retryOnRateLimit, delay: () => 0, sleep: clock.sleep, now: clock.now, deadline: 20_000 });
    expect(outcome).toMatchObject({ ok: false, error: timeout, deadlineExceeded: true, exhausted: false });
    expect(outcome.ok === false && outcome.refusedWaitMs).toBeUndefined();
    expect(calls).toEqual([1, 2]);
    expect(outcome.attempts.map((attempt) => [attempt.number, attempt.error, attempt.latencyMs])).toEqual([
      [1, expect.any(FakeHttpError), 10_000],
      [2, timeout, 10_000],
    ]);
  });

  it('keeps a success that ended after the deadline', async () => {
    const clock = fakeClock();
    const { operation } = scripted([], 'late but here', clock, 50_000);
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: () => 0, sleep: clock.sleep, now: clock.now, deadline: 20_000 });
    expect(outcome).toMatchObject({ ok: true, value: 'late but here' });
  });

  it('passes the attempt number and error to delay, and treats a broken delay as no wait', async () => {
    const clock = fakeClock();
    const errors = [new FakeHttpError(500), new FakeHttpError(500), new FakeHttpError(500)];
    const delays = [Number.NaN, -5, Number.POSITIVE_INFINITY];
    const delay = vi.fn((attempt: number) => delays[attempt - 1] ?? 0);
    const { operation } = scripted(errors, 'ok', clock);
    await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay, sleep: clock.sleep });
    expect(delay.mock.calls).toEqual([
      [1, errors[0]],
      [2, errors[1]],
      [3, errors[2]],
    ]);
    expect(clock.waits).toEqual([0, 0, 0]);
  });

  it('makes no attempt when the signal is already aborted', async () => {
    const controller = new AbortController();
    const reason = new Error('caller went away');
    controller.abort(reason);
    const { operation, calls } = scripted([], 'never');
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: () => 0, signal: controller.signal });
    expect(outcome).toEqual({ ok: false, error: reason, attempts: [], exhausted: false, aborted: true, deadlineExceeded: false });
    expect(calls).toEqual([]);
  });

  it('never retries an attempt that failed because the caller aborted', async () => {
    const controller = new AbortController();
    const shouldRetry = vi.fn(() => true);
    const sleep = vi.fn(async () => {});
    const abortError = new DOMException('This operation was aborted', 'AbortError');
    const operation = vi.fn(async () => {
      controller.abort();
      throw abortError;
    });
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry, delay: () => 1000, sleep, signal: controller.signal });
    expect(outcome).toMatchObject({ ok: false, exhausted: false, aborted: true });
    expect(outcome.ok === false && outcome.error).toBe(controller.signal.reason);
    expect(outcome.attempts).toHaveLength(1);
    expect(outcome.attempts[0]?.error).toBe(abortError);
    expect(outcome.attempts[0]?.waitMs).toBeUndefined();
    expect(operation).toHaveBeenCalledTimes(1);
    expect(shouldRetry).not.toHaveBeenCalled();
    expect(sleep).not.toHaveBeenCalled();
  });

  it('ends a pending sleep at once when the caller aborts during it', async () => {
    const controller = new AbortController();
    const { operation, calls } = scripted([new FakeHttpError(429), new FakeHttpError(429)], 'never');
    // The default sleep (a real timer) would wait 10 minutes here; the abort must cut it short.
    const pending = retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: () => 600_000, signal: controller.signal });
    await vi.waitFor(() => expect(calls).toEqual([1]));
    controller.abort();
    const outcome = await pending;
    expect(outcome).toMatchObject({ ok: false, exhausted: false, aborted: true });
    expect(calls).toEqual([1]);
    expect(outcome.attempts).toHaveLength(1);
    expect(outcome.attempts[0]?.waitMs).toBe(600_000);
  });

  it('stops after an injected sleep when the signal aborted meanwhile', async () => {
    const controller = new AbortController();
    const sleep = async () => {
      controller.abort();
    };
    const { operation, calls } = scripted([new FakeHttpError(429), new FakeHttpError(429)], 'never');
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: () => 1000, sleep, signal: controller.signal });
    expect(outcome).toMatchObject({ ok: false, aborted: true });
    expect(calls).toEqual([1]);
  });

  it('keeps a success that completed despite a late abort', async () => {
    const controller = new AbortController();
    const operation = async () => {
      controller.abort();
      return 'done';
    };
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: () => 0, signal: controller.signal });
    expect(outcome).toMatchObject({ ok: true, value: 'done' });
  });

  it('rethrows a sleep failure that is not an abort', async () => {
    const { operation } = scripted([new FakeHttpError(429)], 'never');
    const sleep = async () => {
      throw new Error('timer broke');
    };
    await expect(retry(operation, { maxAttempts: 3, shouldRetry: () => true, delay: () => 1, sleep })).rejects.toThrow('timer broke');
  });

  it('calls onAttempt once per finished attempt, in order, with the wait already set', async () => {
    const clock = fakeClock();
    const seen: AttemptRecord[] = [];
    const waitsWhenSeen: number[] = [];
    const errors = [new FakeHttpError(429), new FakeHttpError(502)];
    const { operation } = scripted(errors, 'ok', clock, 10);
    const onAttempt = (record: AttemptRecord) => {
      seen.push({ ...record });
      waitsWhenSeen.push(clock.waits.length);
    };
    const outcome = await retry(operation, { maxAttempts: 5, shouldRetry: () => true, delay: tinyTroupeBackoff(), sleep: clock.sleep, now: clock.now, onAttempt });
    expect(seen).toEqual(outcome.attempts);
    expect(seen.map((record) => [record.number, record.waitMs])).toEqual([
      [1, 1000],
      [2, 5000],
      [3, undefined],
    ]);
    // Reported before the sleep it announces, so a history row exists while the call waits.
    expect(waitsWhenSeen).toEqual([0, 1, 2]);
  });

  it('catches an operation that throws synchronously', async () => {
    const error = new FakeHttpError(400);
    const operation = (() => {
      throw error;
    }) as unknown as () => Promise<string>;
    const outcome = await retry(operation, { maxAttempts: 3, shouldRetry: retryOnRateLimit, delay: () => 0 });
    expect(outcome).toMatchObject({ ok: false, error, exhausted: false });
  });

  it('rejects a maxAttempts below 1 or fractional', async () => {
    const operation = async () => 'x';
    await expect(retry(operation, { maxAttempts: 0, shouldRetry: () => true, delay: () => 0 })).rejects.toThrow(RangeError);
    await expect(retry(operation, { maxAttempts: 2.5, shouldRetry: () => true, delay: () => 0 })).rejects.toThrow(RangeError);
  });
});
