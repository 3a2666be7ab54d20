import { setTimeout as sleepFor } from 'node:timers/promises';

export interface AttemptRecord {
  /** 1-based. */
  number: number;
  startedAt: Date;
  latencyMs: number;
  /** What the attempt threw; absent when it succeeded. */
  error?: unknown;
  /** The wait planned after this attempt before the next one; absent when no attempt followed. */
  waitMs?: number;
}

export type RetryOutcome<T> =
  | { ok: true; value: T; attempts: AttemptRecord[] }
  | {
      ok: false;
      /** The last attempt's error, or the signal's reason when the caller aborted. */
      error: unknown;
      attempts: AttemptRecord[];
      /** True when all `maxAttempts` were used on retryable errors. */
      exhausted: boolean;
      aborted: boolean;
      /** True when a retryable error came with no time left before the deadline for another attempt. */
      deadlineExceeded: boolean;
      /** The wait the loop refused to begin, longer than `maxWaitMs` or than the time left before the deadline. */
      refusedWaitMs?: number;
    };

export interface RetryOptions {
  /** At least 1; 1 means no retry. */
  maxAttempts: number;
  /** Called after every failed attempt, the last one too (to tell exhaustion from a final error). */
  shouldRetry: (error: unknown, attempt: number) => boolean;
  /** Milliseconds to wait after failed attempt `attempt` (1-based) before the next one. */
  delay: (attempt: number, error: unknown) => number;
  /** @default setTimeout of node:timers/promises, cancelled by the signal */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Clock for latencies, in milliseconds. @default performance.now */
  now?: () => number;
  /** The caller's abort: never retried, and it ends a pending sleep at once. */
  signal?: AbortSignal;
  /** Called once per attempt with its finished record (wait included), e.g. to write the audit history. */
  onAttempt?: (record: AttemptRecord) => void;
  /**
   * When the whole call must be over, on the `now` clock: no wait that would end at or after it is
   * begun. The operation bounds its own attempt by it (the loop never races an attempt).
   */
  deadline?: number;
  /** The longest wait the loop begins; a longer one (a server's Retry-After) ends the loop instead. @default Infinity */
  maxWaitMs?: number;
}

const defaultSleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
  await sleepFor(ms, undefined, signal ? { signal } : undefined);
};

/**
 * Never throws the operation's errors: the outcome carries them with every attempt, for the audit.
 * An attempt in flight is not raced against the signal: the operation gets the signal through its
 * closure and stops itself, so its latency and error are recorded truthfully.
 */
export async function retry<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions): Promise<RetryOutcome<T>> {
  const { maxAttempts, shouldRetry, delay, signal, onAttempt } = options;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    throw new RangeError(`maxAttempts must be an integer of at least 1, got ${maxAttempts}`);
  }
  const sleep = options.sleep ?? defaultSleep;
  const now = options.now ?? (() => performance.now());
  const attempts: AttemptRecord[] = [];
  const finish = (record: AttemptRecord): void => {
    attempts.push(record);
    onAttempt?.(record);
  };
  const abortedOutcome = (): RetryOutcome<T> => ({ ok: false, error: signal?.reason, attempts, exhausted: false, aborted: true, deadlineExceeded: false });
  const deadline = options.deadline ?? Number.POSITIVE_INFINITY;
  const maxWaitMs = options.maxWaitMs ?? Number.POSITIVE_INFINITY;

  for (let number = 1; ; number++) {
    if (signal?.aborted) return abortedOutcome();

    const startedAt = new Date();
    const start = now();
    let value: T;
    try {
      value = await operation(number);
    } catch (error) {
      const record: AttemptRecord = { number, startedAt, latencyMs: now() - start, error };
      if (signal?.aborted) {
        finish(record);
        return abortedOutcome();
      }
      const retryable = shouldRetry(error, number);
      if (!retryable || number >= maxAttempts) {
        finish(record);
        return { ok: false, error, attempts, exhausted: retryable, aborted: false, deadlineExceeded: false };
      }
      const left = deadline - now();
      if (left <= 0) {
        finish(record);
        return { ok: false, error, attempts, exhausted: false, aborted: false, deadlineExceeded: true };
      }
      const planned = delay(number, error);
      // A broken delay function must not turn into a tight loop or a timer overflow warning.
      const waitMs = Number.isFinite(planned) && planned > 0 ? planned : 0;
      // Retrying sooner than asked would only earn another refusal; sleeping past the deadline, nothing.
      if (waitMs > maxWaitMs || waitMs >= left) {
        finish(record);
        return { ok: false, error, attempts, exhausted: false, aborted: false, deadlineExceeded: waitMs >= left, refusedWaitMs: waitMs };
      }
      record.waitMs = waitMs;
      finish(record);
      try {
        await sleep(record.waitMs, signal);
      } catch (sleepError) {
        if (signal?.aborted) return abortedOutcome();
        throw sleepError;
      }
      continue;
    }
    finish({ number, startedAt, latencyMs: now() - start });
    return { ok: true, value, attempts };
  }
}

export interface BackoffOptions {
  /** The first wait, in milliseconds (TinyTroupe's WAITING_TIME). */
  initialMs: number;
  /** Growth per attempt (TinyTroupe's EXPONENTIAL_BACKOFF_FACTOR). */
  factor: number;
  /** The cap on a single wait, jitter and Retry-After included. */
  maxMs: number;
  /** Fraction of the wait randomised, 0..1: the wait is multiplied by (1 - jitter * random()). */
  jitter: number;
  /** @default Math.random */
  random?: () => number;
}

/**
 * TinyTroupe's geometric schedule (initialMs, then times factor), capped and jittered downwards
 * so the cap is never exceeded. A server's `retryAfterMs` (from Retry-After / retry-after-ms) is
 * returned exactly, even over the cap: retrying sooner than the server asked only earns another
 * refusal, so the loop's `maxWaitMs` (the same cap) ends the call instead.
 */
export function exponentialBackoff(options: BackoffOptions): (attempt: number, error: unknown) => number {
  const { initialMs, factor, maxMs, jitter } = options;
  const random = options.random ?? Math.random;
  if (!(Number.isFinite(initialMs) && initialMs >= 0)) throw new RangeError(`initialMs must be a finite number >= 0, got ${initialMs}`);
  if (!(Number.isFinite(factor) && factor > 0)) throw new RangeError(`factor must be a finite number > 0, got ${factor}`);
  if (!(Number.isFinite(maxMs) && maxMs >= 0)) throw new RangeError(`maxMs must be a finite number >= 0, got ${maxMs}`);
  if (!(Number.isFinite(jitter) && jitter >= 0 && jitter <= 1)) throw new RangeError(`jitter must be between 0 and 1, got ${jitter}`);

  return (attempt, error) => {
    const retryAfterMs = retryAfterOf(error);
    if (retryAfterMs !== undefined && retryAfterMs >= 0) return retryAfterMs;
    // Past the cap the power may overflow to Infinity; min() absorbs that.
    const capped = Math.min(maxMs, initialMs * factor ** (attempt - 1));
    return capped * (1 - jitter * random());
  };
}

/** The wait a server asked for with an error (its `retryAfterMs`), when it asked. */
export function retryAfterOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('retryAfterMs' in error)) return undefined;
  const value = error.retryAfterMs;
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}
