import pLimit from 'p-limit';
import type { OpenAiConfig } from '../../config/config.ts';
import { CallboardError, isCallboardError, ProviderError } from '../../errors.ts';
import type { AttemptRow } from '../history.ts';
import { exponentialBackoff, retry, retryAfterOf, type AttemptRecord, type RetryOutcome } from '../retry.ts';
import { abortedError, type CallBounds } from './bounds.ts';

const retryableStatuses = new Set([408, 409, 429]);
/** Seed-behaviour section 3: 408, 409, 429, 5xx, timeouts and connection errors; never 400, 401, 403, 404, 422 or an abort. */
export function isRetryable(error: unknown): boolean {
  if (!(error instanceof ProviderError)) return false;
  if (error.status !== undefined) return retryableStatuses.has(error.status) || error.status >= 500;
  return error.code === 'PROVIDER_TIMEOUT' || error.code === 'PROVIDER_UNAVAILABLE' || error.code === 'STREAM_INTERRUPTED';
}

/** An upstream operation's answer and the attempts it took; a failure carries its attempts too. */
export interface UpstreamResult<T> {
  value: T;
  attempts: AttemptRow[];
}

/** The error of a failed upstream operation, with the attempts that were made. */
export type UpstreamFailure = Error & { attempts?: AttemptRow[] };

export interface Upstream {
  /**
   * The retry step: runs one upstream operation with retries and exponential backoff, each attempt
   * bounded by MAX_CONCURRENT_MODEL_CALLS and by the call's deadline (TIMEOUT or the time left,
   * whichever is shorter). Aborted by the caller's signal or the server's forced stop.
   */
  call<T>(
    settings: OpenAiConfig,
    bounds: CallBounds,
    operation: (signal: AbortSignal, timeoutMs: number) => Promise<T>,
    signal: AbortSignal | undefined,
  ): Promise<UpstreamResult<T>>;
}

export interface UpstreamOptions {
  /** Replaces secrets in the attempts' error messages before they are stored. */
  redact: <T>(value: T) => T;
  /** Aborts every upstream request, shared ones included: the server's forced stop. */
  stop?: AbortSignal;
  /** Injected for tests on a fake clock. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

export function createUpstream(options: UpstreamOptions): Upstream {
  const { stop, redact } = options;
  const limiters = new Map<number, ReturnType<typeof pLimit>>();
  const limiterFor = (concurrency: number) => {
    let limiter = limiters.get(concurrency);
    if (!limiter) limiters.set(concurrency, (limiter = pLimit(concurrency)));
    return limiter;
  };
  // One listener on the stop signal for all calls: a listener per call would pile up on a signal that lives as long as the process.
  const inFlight = new Set<AbortController>();
  stop?.addEventListener('abort', () => inFlight.forEach((controller) => controller.abort(stop.reason)), { once: true });

  function finalError(outcome: Extract<RetryOutcome<unknown>, { ok: false }>, bounds: CallBounds, settings: OpenAiConfig): unknown {
    if (outcome.aborted) return stop?.aborted ? new CallboardError('ABORTED', 'The call was cut: the server had to stop.') : abortedError();
    const stopped = stoppedEarlyError(outcome, bounds, settings);
    if (stopped) return stopped;
    // A single attempt (MAX_ATTEMPTS=1) retried nothing: its own error says more than "gave up".
    if (!outcome.exhausted || outcome.attempts.length === 1) return outcome.error;
    const last = outcome.error;
    return new CallboardError('RETRY_EXHAUSTED', `Gave up after ${outcome.attempts.length} attempts; the last one failed with: ${messageOf(last)}`, {
      details: { attempts: outcome.attempts.length, ...lastErrorOf(last) },
      cause: last,
    });
  }

  return {
    async call<T>(settings: OpenAiConfig, bounds: CallBounds, operation: (signal: AbortSignal, timeoutMs: number) => Promise<T>, signal: AbortSignal | undefined): Promise<UpstreamResult<T>> {
      const limit = settings.maxConcurrentModelCalls;
      // Aborted by the caller or by the server's forced stop, whichever comes first.
      const controller = new AbortController();
      const onCallerAbort = () => controller.abort(signal!.reason);
      if (signal?.aborted || stop?.aborted) controller.abort(signal?.reason);
      signal?.addEventListener('abort', onCallerAbort, { once: true });
      inFlight.add(controller);
      const attempt = () => {
        // Measured when the request goes out: a wait for a free slot spends the call's time too.
        const left = bounds.deadline - performance.now();
        if (left <= 0) return Promise.reject(new ProviderError('PROVIDER_TIMEOUT', 'The call had no time left for this attempt (it waited for a free upstream slot).'));
        // The SDK takes whole milliseconds only.
        return operation(controller.signal, Math.max(1, Math.floor(Math.min(bounds.timeoutMs, left))));
      };
      let outcome: RetryOutcome<T>;
      try {
        outcome = await retry(() => (limit > 0 ? limiterFor(limit)(attempt) : attempt()), {
          maxAttempts: bounds.maxAttempts,
          deadline: bounds.deadline,
          maxWaitMs: settings.maxWaitingTime * 1000,
          shouldRetry: isRetryable,
          delay: exponentialBackoff({
            initialMs: settings.waitingTime * 1000,
            factor: settings.exponentialBackoffFactor,
            maxMs: settings.maxWaitingTime * 1000,
            jitter: settings.backoffJitter,
            random: options.random,
          }),
          sleep: options.sleep,
          signal: controller.signal,
        });
      } finally {
        inFlight.delete(controller);
        signal?.removeEventListener('abort', onCallerAbort);
      }
      const attempts = outcome.attempts.map((attempt) => {
        const row = toAttemptRow(attempt);
        return { ...row, errorMessage: redact(row.errorMessage) };
      });
      if (outcome.ok) return { value: outcome.value, attempts };
      const error = finalError(outcome, bounds, settings);
      throw Object.assign(error instanceof Error ? error : new Error(String(error)), { attempts });
    },
  };
}

/** The call ended before MAX_ATTEMPTS: a server asked for a wait we will not make, or the deadline came. */
function stoppedEarlyError(outcome: Extract<RetryOutcome<unknown>, { ok: false }>, bounds: CallBounds, settings: OpenAiConfig): CallboardError | undefined {
  const last = outcome.error;
  const count = outcome.attempts.length;
  const retryAfterMs = retryAfterOf(last);
  if (outcome.refusedWaitMs !== undefined && retryAfterMs !== undefined) {
    const retryAfterSeconds = Math.ceil(retryAfterMs / 1000);
    const limit = retryAfterMs > settings.maxWaitingTime * 1000 ? `MAX_WAITING_TIME (${settings.maxWaitingTime} s)` : `the time left before the call's deadline`;
    return new ProviderError('PROVIDER_RATE_LIMITED', `The provider asked to wait ${retryAfterSeconds} s before a retry, longer than ${limit}; try again later.`, {
      status: last instanceof ProviderError ? last.status : undefined,
      retryAfterMs,
      requestId: last instanceof ProviderError ? last.requestId : undefined,
      details: { retryAfterSeconds, attempts: count },
      cause: last,
    });
  }
  if (!outcome.deadlineExceeded) return undefined;
  return new CallboardError('DEADLINE_EXCEEDED', `The call's deadline of ${bounds.deadlineMs / 1000} s came after ${count} attempt${count === 1 ? '' : 's'}; the last one failed with: ${messageOf(last)}`, {
    details: { deadlineSeconds: bounds.deadlineMs / 1000, attempts: count, ...lastErrorOf(last) },
    cause: last,
  });
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));
const lastErrorOf = (last: unknown) => ({
  lastErrorCode: isCallboardError(last) ? last.code : null,
  lastStatus: last instanceof ProviderError ? (last.status ?? null) : null,
});

export function toAttemptRow(attempt: AttemptRecord): AttemptRow {
  const error = attempt.error;
  return {
    number: attempt.number,
    startedAt: attempt.startedAt,
    latencyMs: attempt.latencyMs,
    httpStatus: error === undefined ? 200 : error instanceof ProviderError ? (error.status ?? null) : null,
    errorCode: error === undefined ? null : isCallboardError(error) ? error.code : 'INTERNAL_SERVER_ERROR',
    errorMessage: error === undefined ? null : error instanceof Error ? error.message : String(error),
    waitMs: attempt.waitMs === undefined ? null : Math.round(attempt.waitMs),
    requestId: error instanceof ProviderError ? (error.requestId ?? null) : null,
  };
}
