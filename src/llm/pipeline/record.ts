import { newId } from '../../ids.ts';
import { defaultTenant } from '../../auth/identity.ts';
import { noLimits, type KeyLimits } from '../../auth/limits.ts';
import { CallboardError, InputLimitError, isCallboardError } from '../../errors.ts';
import type { CallKind } from '../cache.ts';
import type { AttemptRow, CallRecord, HistoryWriter } from '../history.ts';

/** Who makes a call, as the door decided: its tenant and key are recorded, its limits applied. */
export interface Caller {
  tenant: string;
  /** null for the master key and open mode. */
  apiKeyId: string | null;
  limits: KeyLimits;
}

/** Open mode's caller, for code that calls the client without a request (tests, scripts). */
export const defaultCaller: Caller = { tenant: defaultTenant, apiKeyId: null, limits: noLimits };

/** What every call carries into its history row besides its request. */
export interface RecordedOptions {
  caller?: Caller | null;
  tags?: readonly string[] | null;
  metadata?: unknown;
  template?: { name: string | null; hash: string | null };
  /** The HTTP request the call is made for: its log line and trace list the call once it is finished. */
  requestLog?: CallsOfRequest | null;
}

/** What a request keeps of its calls (src/observability/request-log.ts): each finished call is appended. */
export interface CallsOfRequest {
  calls: CallRecord[];
}

/** A failed call's error carries the id of its history row, so a caller can look it up. */
export function callIdOf(error: unknown): string | undefined {
  return isCallboardError(error) && typeof error.details.callId === 'string' ? error.details.callId : undefined;
}

export interface Recorder {
  /** A new row for a call that starts now: SUCCESS and BYPASS until told otherwise. */
  start(kind: CallKind, apiType: string, model: string, input: RecordedOptions): CallRecord;
  /**
   * The record step: finishes a row (latency, the error if any, bodies dropped unless STORE_BODIES)
   * and hands it to the history writer. `ownsAttempts`: the error's attempts are this call's (not
   * those of another caller's shared request).
   */
  finish(record: CallRecord, started: number, prompt: unknown, error?: unknown, ownsAttempts?: boolean): CallRecord;
  /** Throws the error for the caller: a copy naming its call, secrets redacted. */
  fail(error: unknown, record: CallRecord): never;
  redact: <T>(value: T) => T;
}

export function createRecorder(options: {
  history: Pick<HistoryWriter, 'recordCall'>;
  secrets: readonly string[];
  storeBodies: boolean;
  /** Told of every finished row (the metrics); it must be cheap and must not throw. */
  onFinished?: (record: CallRecord) => void;
}): Recorder {
  const redact = createRedactor(options.secrets);
  /** The request of each call that has one, until it is finished. */
  const requests = new WeakMap<CallRecord, CallsOfRequest>();
  return {
    redact,
    start(kind, apiType, model, input) {
      const caller = input.caller ?? defaultCaller;
      const record: CallRecord = {
        id: newId(),
        createdAt: new Date(),
        tenant: caller.tenant,
        apiKeyId: caller.apiKeyId,
        servedByCallId: null,
        kind,
        apiType,
        model,
        status: 'SUCCESS',
        cacheStatus: 'BYPASS',
        cacheKey: null,
        errorCode: null,
        errorMessage: null,
        attemptCount: 0,
        latencyMs: 0,
        promptTokens: null,
        completionTokens: null,
        totalTokens: null,
        estimatedPromptTokens: null,
        costUsd: null,
        costSavedUsd: null,
        templateName: input.template?.name ?? null,
        templateHash: input.template?.hash ?? null,
        tags: [...(input.tags ?? [])],
        metadata: redact(input.metadata ?? null),
        requestBody: null,
        responseBody: null,
        streamed: false,
        timeToFirstTokenMs: null,
        attempts: [],
      };
      if (input.requestLog) requests.set(record, input.requestLog);
      return record;
    },
    finish(record, started, prompt, error, ownsAttempts = true) {
      record.latencyMs = performance.now() - started;
      // A hit spent nothing: what its answer cost when it was produced is what it saved.
      if (record.cacheStatus === 'HIT') {
        record.costSavedUsd = record.costUsd;
        record.costUsd = '0';
      }
      // A call refused for what it carries keeps none of the refused part, and its prompt is not counted.
      if (error instanceof InputLimitError) {
        prompt = null;
        if (error.field === 'tags') record.tags = [];
        if (error.field === 'metadata') record.metadata = null;
      }
      if (error !== undefined) {
        record.status = 'ERROR';
        record.errorCode = isCallboardError(error) ? error.code : 'INTERNAL_SERVER_ERROR';
        record.errorMessage = redact(error instanceof Error ? error.message : String(error)) as string;
        const attempts = (error as { attempts?: AttemptRow[] }).attempts;
        if (attempts && ownsAttempts) {
          record.attempts = attempts;
          record.attemptCount = attempts.length;
        }
      }
      if (!options.storeBodies) {
        record.requestBody = null;
        record.responseBody = null;
      }
      options.history.recordCall(record, prompt);
      requests.get(record)?.calls.push(record);
      options.onFinished?.(record);
      return record;
    },
    fail(error, record) {
      if (isCallboardError(error)) {
        // A copy: callers waiting on one single-flight share the error object, each with its own call.
        const copy = Object.assign(Object.create(Object.getPrototypeOf(error) as object) as CallboardError, error, {
          details: { ...error.details, callId: record.id },
        });
        // An upstream message may quote the server's own key: secrets are never answered.
        copy.message = redact(error.message);
        copy.stack = error.stack;
        throw copy;
      }
      // A bug, not a provider's answer: the API masks it as "Unexpected error." and logs the cause.
      throw error;
    },
  };
}

/**
 * Replaces every occurrence of a secret in the strings (and keys) of a JSON-like value. Copy on
 * write: a value with no secret in it is returned as it is, and a changed one shares every part that
 * did not change; the input is never modified. Values are redacted on every call's path, and almost
 * none holds a secret: a whole copy of each body cost more than the check.
 */
export function createRedactor(secrets: readonly string[]): <T>(value: T) => T {
  const needles = secrets.filter((secret) => secret.length >= 4);
  if (needles.length === 0) return (value) => value;
  const scrubText = (text: string) => {
    let scrubbed = text;
    for (const needle of needles) if (scrubbed.includes(needle)) scrubbed = scrubbed.split(needle).join('[redacted]');
    return scrubbed;
  };
  const scrub = (value: unknown, depth: number): unknown => {
    if (typeof value === 'string') return scrubText(value);
    if (!value || typeof value !== 'object' || value instanceof Date) return value;
    // A caller's metadata may nest thousands of levels: walking it would overflow the stack and fail the call.
    if (depth >= maxRedactedDepth) return '[nested too deep to store]';
    if (Array.isArray(value)) {
      let copy: unknown[] | undefined;
      for (let index = 0; index < value.length; index++) {
        const scrubbed = scrub(value[index], depth + 1);
        if (scrubbed !== value[index]) (copy ??= value.slice())[index] = scrubbed;
      }
      return copy ?? value;
    }
    let copy: Record<string, unknown> | undefined;
    let renamed = false;
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const scrubbed = scrub(record[key], depth + 1);
      if (scrubText(key) !== key) renamed = true;
      else if (scrubbed !== record[key]) (copy ??= { ...record })[key] = scrubbed;
    }
    // A secret in a key (rare): the object is rebuilt with every key scrubbed.
    if (renamed) return Object.fromEntries(Object.keys(record).map((key) => [scrubText(key), scrub(record[key], depth + 1)]));
    return copy ?? value;
  };
  return (value) => scrub(value, 0) as typeof value;
}

const maxRedactedDepth = 200;
