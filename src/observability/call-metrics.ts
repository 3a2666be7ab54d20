import { Counter, Histogram, type Registry } from 'prom-client';
import type { AttemptRow, CallRecord } from '../llm/history.ts';

/** The label value of everything past a label's bound. */
export const otherLabel = 'other';
/** Characters kept of a caller-influenced label value. */
export const maxLabelLength = 100;

export interface LabelBoundOptions {
  /** Distinct values kept, `known` ones included; later ones are `other`. */
  max: number;
  /** Values that have a label of their own from the start (configured models), while `max` allows. */
  known?: Iterable<string>;
}

/**
 * Keeps a label that callers influence (a model or API type name they send, a tenant) to a bounded
 * set of values: the first `max` distinct values seen (truncated to maxLabelLength characters) keep
 * their own, later ones become `other`. A value is admitted only when `admit` is true: a model name
 * gets a label of its own once a call to it succeeded, so a caller sending made-up names (which the
 * provider refuses) cannot use up the bound.
 */
export function createLabelBound(options: LabelBoundOptions): (raw: string, admit: boolean) => string {
  const seen = new Set<string>();
  for (const value of options.known ?? []) if (seen.size < options.max) seen.add(value.slice(0, maxLabelLength));
  return (raw, admit) => {
    const value = raw.length > maxLabelLength ? raw.slice(0, maxLabelLength) : raw;
    if (seen.has(value)) return value;
    if (!admit || seen.size >= options.max) return otherLabel;
    seen.add(value);
    return value;
  };
}

export interface CallMetricsOptions {
  registry: Registry;
  /** @default 50 */
  maxModels?: number;
  /** @default 100 */
  maxTenants?: number;
  /** API types (providers) told apart. @default 20 */
  maxProviders?: number;
  knownModels?: Iterable<string>;
  knownProviders?: Iterable<string>;
}

export interface CallMetrics {
  /** Counts one finished call (its row as the history gets it). Never throws. */
  observe(record: CallRecord): void;
}

/** Call latencies: a memory hit takes well under a millisecond, a long answer a minute or more. */
const callBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300];
/** Callboard's own time per call: tenths of a millisecond to a few when all is well. */
const overheadBuckets = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

const isPositive = (value: number | null): value is number => value !== null && value > 0 && Number.isFinite(value);

/** An attempt's outcome as a label: its HTTP status, else `timeout`, `aborted` or `none` (no answer: a network error). */
export function attemptStatusLabel(attempt: Pick<AttemptRow, 'httpStatus' | 'errorCode'>): string {
  const status = attempt.httpStatus;
  if (status !== null) return Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : otherLabel;
  if (attempt.errorCode === 'PROVIDER_TIMEOUT') return 'timeout';
  if (attempt.errorCode === 'ABORTED') return 'aborted';
  return 'none';
}

/**
 * The metrics of finished calls: what was called and how it ended, the upstream attempts, the time
 * spent (in all, at the provider, and Callboard's own), and the tokens and dollars spent at the
 * provider or saved by the cache. Updated once per call from its history row.
 */
export function createCallMetrics(options: CallMetricsOptions): CallMetrics {
  const registers = [options.registry];
  const calls = new Counter({
    name: 'callboard_calls_total',
    help: 'Calls (chat and embedding, GraphQL and /v1) by how they ended.',
    labelNames: ['kind', 'status', 'cache_status', 'model', 'provider', 'tenant'] as const,
    registers,
  });
  const attempts = new Counter({
    name: 'callboard_upstream_attempts_total',
    help: 'Requests to the provider, by HTTP status (timeout, aborted or none when no status came back).',
    labelNames: ['provider', 'model', 'http_status'] as const,
    registers,
  });
  const retries = new Counter({
    name: 'callboard_upstream_retries_total',
    help: 'Attempts after the first of a call, by the HTTP status of the attempt that was retried.',
    labelNames: ['provider', 'http_status'] as const,
    registers,
  });
  const callDuration = new Histogram({
    name: 'callboard_call_duration_seconds',
    help: 'Latency of a call as its caller sees it (to the last chunk for a stream).',
    labelNames: ['kind', 'cache_status'] as const,
    buckets: callBuckets,
    registers,
  });
  const upstreamDuration = new Histogram({
    name: 'callboard_upstream_duration_seconds',
    help: "The provider's time per call that reached it: its attempts together, backoff waits aside.",
    labelNames: ['provider'] as const,
    buckets: callBuckets,
    registers,
  });
  const overhead = new Histogram({
    name: 'callboard_overhead_seconds',
    help: "Callboard's own time per call that is not streamed: its latency less its attempts and backoff waits.",
    labelNames: ['kind', 'cache_status'] as const,
    buckets: overheadBuckets,
    registers,
  });
  const tokens = new Counter({
    name: 'callboard_tokens_total',
    help: 'Tokens as the provider counted them: spent by calls that reached it, saved by cache hits.',
    labelNames: ['model', 'tenant', 'type', 'outcome'] as const,
    registers,
  });
  const cost = new Counter({
    name: 'callboard_cost_usd_total',
    help: 'USD at [Prices]: spent by calls that reached the provider, saved by cache hits.',
    labelNames: ['model', 'tenant', 'outcome'] as const,
    registers,
  });
  const model = createLabelBound({ max: options.maxModels ?? 50, known: options.knownModels });
  const tenant = createLabelBound({ max: options.maxTenants ?? 100 });
  const provider = createLabelBound({ max: options.maxProviders ?? 20, known: options.knownProviders });

  function observe(record: CallRecord): void {
    const succeeded = record.status === 'SUCCESS';
    const modelLabel = model(record.model, succeeded);
    const providerLabel = provider(record.apiType, succeeded);
    // Tenants are made by ADMINs (keys), not by callers: each one is admitted, up to the bound.
    const tenantLabel = tenant(record.tenant, true);
    calls.labels(record.kind, record.status, record.cacheStatus, modelLabel, providerLabel, tenantLabel).inc();
    const seconds = record.latencyMs / 1000;
    callDuration.labels(record.kind, record.cacheStatus).observe(seconds);

    let upstreamMs = 0;
    let waitedMs = 0;
    const rows = record.attempts;
    for (let index = 0; index < rows.length; index++) {
      const attempt = rows[index]!;
      upstreamMs += attempt.latencyMs;
      waitedMs += attempt.waitMs ?? 0;
      attempts.labels(providerLabel, modelLabel, attemptStatusLabel(attempt)).inc();
      if (index > 0) retries.labels(providerLabel, attemptStatusLabel(rows[index - 1]!)).inc();
    }
    if (rows.length > 0) upstreamDuration.labels(providerLabel).observe(upstreamMs / 1000);
    // A stream's latency runs to its last chunk, which the provider sends at its own pace: not ours to count.
    if (!record.streamed) overhead.labels(record.kind, record.cacheStatus).observe(Math.max(0, record.latencyMs - upstreamMs - waitedMs) / 1000);

    const outcome = record.cacheStatus === 'HIT' ? 'saved' : rows.length > 0 ? 'spent' : null;
    if (outcome === null) return;
    if (isPositive(record.promptTokens)) tokens.labels(modelLabel, tenantLabel, 'prompt', outcome).inc(record.promptTokens);
    if (isPositive(record.completionTokens)) tokens.labels(modelLabel, tenantLabel, 'completion', outcome).inc(record.completionTokens);
    // A hit's row spent 0 and holds what it saved apart. Prometheus counts in float64: the exact
    // decimal becomes a number here, at the edge, and nowhere else (the history keeps it exact).
    const usd = Number(outcome === 'saved' ? record.costSavedUsd : record.costUsd);
    if (isPositive(usd)) cost.labels(modelLabel, tenantLabel, outcome).inc(usd);
  }

  return {
    observe(record) {
      try {
        observe(record);
      } catch {
        // Metrics never fail a call (a counter refuses a negative or non-finite increment).
      }
    },
  };
}
