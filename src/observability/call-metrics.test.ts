import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { AttemptRow, CallRecord } from '../llm/history.ts';
import { attemptStatusLabel, createCallMetrics, createLabelBound, maxLabelLength } from './call-metrics.ts';

function attempt(overrides: Partial<AttemptRow> = {}): AttemptRow {
  return { number: 1, startedAt: new Date(), latencyMs: 100, httpStatus: 200, errorCode: null, errorMessage: null, waitMs: null, requestId: null, ...overrides };
}

function record(overrides: Partial<CallRecord> = {}): CallRecord {
  return {
    id: 'call',
    createdAt: new Date(),
    tenant: 'default',
    apiKeyId: null,
    servedByCallId: null,
    kind: 'CHAT',
    apiType: 'openai',
    model: 'gpt-4o-mini',
    status: 'SUCCESS',
    cacheStatus: 'MISS',
    cacheKey: null,
    errorCode: null,
    errorMessage: null,
    attemptCount: 1,
    latencyMs: 150,
    streamed: false,
    timeToFirstTokenMs: null,
    promptTokens: 10,
    completionTokens: 5,
    totalTokens: 15,
    estimatedPromptTokens: null,
    costUsd: '0.001',
    costSavedUsd: null,
    templateName: null,
    templateHash: null,
    tags: [],
    metadata: null,
    requestBody: null,
    responseBody: null,
    attempts: [attempt()],
    ...overrides,
  };
}

async function values(registry: Registry, name: string) {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  return (await metric.get()).values as { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

describe('createLabelBound', () => {
  it('keeps the first distinct values up to the bound, known ones first, then answers "other"', () => {
    const bound = createLabelBound({ max: 3, known: ['configured'] });
    expect(bound('configured', false)).toBe('configured');
    expect(bound('a', true)).toBe('a');
    expect(bound('b', true)).toBe('b');
    expect(bound('c', true)).toBe('other');
    expect(bound('a', true)).toBe('a');
  });

  it('admits a value only when told to: a made-up name of a failed call does not use up the bound', () => {
    const bound = createLabelBound({ max: 2 });
    expect(bound('made-up', false)).toBe('other');
    expect(bound('real', true)).toBe('real');
    expect(bound('made-up', false)).toBe('other');
    expect(bound('real', false)).toBe('real');
  });

  it(`truncates values to ${maxLabelLength} characters, so that long ones share a label`, () => {
    const bound = createLabelBound({ max: 10 });
    const long = 'x'.repeat(5000);
    expect(bound(long, true)).toBe('x'.repeat(maxLabelLength));
    expect(bound(`${long}y`, true)).toBe('x'.repeat(maxLabelLength));
  });
});

describe('attemptStatusLabel', () => {
  it('names an attempt by its HTTP status, else timeout, aborted or none', () => {
    expect(attemptStatusLabel({ httpStatus: 503, errorCode: 'PROVIDER_UNAVAILABLE' })).toBe('503');
    expect(attemptStatusLabel({ httpStatus: null, errorCode: 'PROVIDER_TIMEOUT' })).toBe('timeout');
    expect(attemptStatusLabel({ httpStatus: null, errorCode: 'ABORTED' })).toBe('aborted');
    expect(attemptStatusLabel({ httpStatus: null, errorCode: 'PROVIDER_UNAVAILABLE' })).toBe('none');
    expect(attemptStatusLabel({ httpStatus: 1234, errorCode: 'PROVIDER_ERROR' })).toBe('other');
  });
});

describe('createCallMetrics', () => {
  it("takes the attempts and the backoff waits out of the latency for Callboard's own time", async () => {
    const registry = new Registry();
    const metrics = createCallMetrics({ registry });
    metrics.observe(record({ latencyMs: 1210, attempts: [attempt({ httpStatus: 503, latencyMs: 100, waitMs: 1000 }), attempt({ number: 2, latencyMs: 105 })] }));
    const overhead = await values(registry, 'callboard_overhead_seconds');
    expect(overhead.find((value) => value.metricName === 'callboard_overhead_seconds_sum')?.value).toBeCloseTo(0.005, 9);
    const upstream = await values(registry, 'callboard_upstream_duration_seconds');
    expect(upstream.find((value) => value.metricName === 'callboard_upstream_duration_seconds_sum')?.value).toBeCloseTo(0.205, 9);
    expect(await values(registry, 'callboard_upstream_retries_total')).toEqual([{ labels: { provider: 'openai', http_status: '503' }, value: 1 }]);
  });

  it('leaves streamed calls out of the overhead: the provider paces their last chunk', async () => {
    const registry = new Registry();
    createCallMetrics({ registry }).observe(record({ streamed: true, latencyMs: 5000 }));
    const overhead = await values(registry, 'callboard_overhead_seconds');
    expect(overhead.filter((value) => value.metricName === 'callboard_overhead_seconds_count')).toEqual([]);
    const calls = await values(registry, 'callboard_call_duration_seconds');
    expect(calls.find((value) => value.metricName === 'callboard_call_duration_seconds_count')?.value).toBe(1);
  });

  it('counts tokens and cost as spent when the call reached the provider, saved when the cache answered, and neither otherwise', async () => {
    const registry = new Registry();
    const metrics = createCallMetrics({ registry });
    metrics.observe(record());
    metrics.observe(record({ cacheStatus: 'HIT', attempts: [], attemptCount: 0, costUsd: '0', costSavedUsd: '0.002' }));
    // Refused before it was sent: nothing spent, nothing saved.
    metrics.observe(record({ status: 'ERROR', attempts: [], attemptCount: 0, promptTokens: 99, costUsd: '1' }));
    const tokens = await values(registry, 'callboard_tokens_total');
    expect(tokens).toEqual([
      { labels: { model: 'gpt-4o-mini', tenant: 'default', type: 'prompt', outcome: 'spent' }, value: 10 },
      { labels: { model: 'gpt-4o-mini', tenant: 'default', type: 'completion', outcome: 'spent' }, value: 5 },
      { labels: { model: 'gpt-4o-mini', tenant: 'default', type: 'prompt', outcome: 'saved' }, value: 10 },
      { labels: { model: 'gpt-4o-mini', tenant: 'default', type: 'completion', outcome: 'saved' }, value: 5 },
    ]);
    expect(await values(registry, 'callboard_cost_usd_total')).toEqual([
      { labels: { model: 'gpt-4o-mini', tenant: 'default', outcome: 'spent' }, value: 0.001 },
      { labels: { model: 'gpt-4o-mini', tenant: 'default', outcome: 'saved' }, value: 0.002 },
    ]);
  });

  it('bounds models, providers and tenants; a failed call with an unknown model or API type counts as "other"', async () => {
    const registry = new Registry();
    const metrics = createCallMetrics({ registry, maxModels: 2, maxTenants: 2, knownModels: ['gpt-4o-mini'], knownProviders: ['openai'] });
    metrics.observe(record({ status: 'ERROR', model: 'no-such-model', apiType: 'no-such-provider', attempts: [] }));
    metrics.observe(record({ model: 'gpt-4.1', tenant: 'a' }));
    metrics.observe(record({ model: 'gpt-4.1-mini', tenant: 'b' }));
    metrics.observe(record({ model: 'gpt-4o-mini', tenant: 'c' }));
    const calls = await values(registry, 'callboard_calls_total');
    expect(calls.map((value) => [value.labels.model, value.labels.provider, value.labels.tenant, value.labels.status])).toEqual([
      ['other', 'other', 'default', 'ERROR'],
      ['gpt-4.1', 'openai', 'a', 'SUCCESS'],
      ['other', 'openai', 'other', 'SUCCESS'],
      ['gpt-4o-mini', 'openai', 'other', 'SUCCESS'],
    ]);
  });

  it('never throws into a call, whatever the row holds', () => {
    const metrics = createCallMetrics({ registry: new Registry() });
    expect(() => metrics.observe(record({ promptTokens: -5, costUsd: 'not a number', latencyMs: Number.NaN }))).not.toThrow();
  });
});
