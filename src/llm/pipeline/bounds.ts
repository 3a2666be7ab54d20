import type { OpenAiConfig } from '../../config/config.ts';
import { badUserInput, CallboardError } from '../../errors.ts';

/** A call's limits in milliseconds, its deadline on the performance.now() clock. */
export interface CallBounds {
  deadlineMs: number;
  deadline: number;
  timeoutMs: number;
  maxAttempts: number;
}

/** What a caller may ask of its own call's limits. */
export interface BoundsInput {
  /** Seconds for the whole call, at most CALL_DEADLINE (its default). */
  deadlineSeconds?: number | null;
  /** Seconds per attempt, at most TIMEOUT (its default). */
  timeoutSeconds?: number | null;
  /** At most MAX_ATTEMPTS (its default). */
  maxAttempts?: number | null;
}

/** The per-call limits: the caller may lower CALL_DEADLINE, TIMEOUT and MAX_ATTEMPTS, never raise them. */
export function boundsOf(input: BoundsInput, settings: OpenAiConfig, started: number): CallBounds {
  const bounded = (field: string, value: number | null | undefined, key: string, max: number, integer: boolean): number => {
    if (value === null || value === undefined) return max;
    if (!Number.isFinite(value) || value <= 0 || value > max || (integer && !Number.isInteger(value))) {
      throw badUserInput(`${field} must be ${integer ? 'a whole number ' : ''}more than 0 and at most ${key} (${max}), got ${value}.`, { field });
    }
    return value;
  };
  const deadlineMs = bounded('deadlineSeconds', input.deadlineSeconds, 'CALL_DEADLINE', settings.callDeadline, false) * 1000;
  return {
    deadlineMs,
    deadline: started + deadlineMs,
    timeoutMs: bounded('timeoutSeconds', input.timeoutSeconds, 'TIMEOUT', settings.timeout, false) * 1000,
    maxAttempts: bounded('maxAttempts', input.maxAttempts, 'MAX_ATTEMPTS', settings.maxAttempts, true),
  };
}

export const abortedError = () => new CallboardError('ABORTED', 'The call was aborted by the caller.');

export function deadlineError(bounds: CallBounds, while_: string): CallboardError {
  const seconds = bounds.deadlineMs / 1000;
  return new CallboardError('DEADLINE_EXCEEDED', `The call's deadline of ${seconds} s came ${while_}.`, { details: { deadlineSeconds: seconds, attempts: 0 } });
}

/**
 * Waits for `promise`, or rejects with ABORTED as soon as the signal aborts, or with
 * DEADLINE_EXCEEDED at this caller's deadline when it waits on another caller's request, which may
 * have a longer one (a leader's own request ends at its deadline, with its attempts).
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, bounds: CallBounds, isLeader: () => boolean): Promise<T> {
  if (signal?.aborted) return Promise.reject(abortedError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortedError());
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      if (!isLeader()) reject(deadlineError(bounds, 'while it waited for the same request made by another call'));
    }, Math.max(0, bounds.deadline - performance.now()));
    promise.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    });
  });
}
