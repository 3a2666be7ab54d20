import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Prisma } from '../../src/db/generated/client.ts';
import { graphql } from '../gql/index.ts';
import type { CallFilter, CallStatsDimension } from '../gql/graphql.ts';
import { createTestApp, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';

const CallStatsQuery = graphql(`
  query ApiStatsCallStats($filter: CallFilter, $groupBy: [CallStatsDimension!]!) {
    callStats(filter: $filter, groupBy: $groupBy) {
      model
      apiType
      kind
      status
      cacheStatus
      template
      tag
      day
      hour
      calls
      errors
      cacheHits
      cacheMisses
      hitRate
      promptTokens
      completionTokens
      costUsd
      tokensSaved
      costSavedUsd
      latencyP50Ms
      latencyP95Ms
      latencyMaxMs
    }
  }
`);

type Row = Pick<Prisma.LlmCallCreateManyInput, 'model' | 'status' | 'cacheStatus' | 'latencyMs' | 'tags'> & {
  /** USD spent, and (hits only) saved: decimal strings, as the history holds them. */
  costUsd: string | null;
  costSavedUsd?: string | null;
  at: string;
  /** Prompt and completion tokens; null for a call without usage. */
  tokens: [number, number] | null;
};

// A hit spent nothing (costUsd 0) and saved what its answer cost (costSavedUsd).
const rows: Row[] = [
  { model: 'gpt-4o', at: '2024-03-01T10:00:00.000Z', status: 'SUCCESS', cacheStatus: 'MISS', tokens: [100, 50], costUsd: '0.5', latencyMs: 100, tags: ['alpha'] },
  { model: 'gpt-4o', at: '2024-03-01T11:00:00.000Z', status: 'SUCCESS', cacheStatus: 'HIT', tokens: [100, 50], costUsd: '0', costSavedUsd: '0.5', latencyMs: 2, tags: ['alpha', 'beta'] },
  { model: 'gpt-4o', at: '2024-03-01T12:00:00.000Z', status: 'ERROR', cacheStatus: 'BYPASS', tokens: null, costUsd: null, latencyMs: 300, tags: ['beta'] },
  { model: 'gpt-4o', at: '2024-03-02T09:00:00.000Z', status: 'SUCCESS', cacheStatus: 'BYPASS', tokens: [200, 100], costUsd: '1', latencyMs: 400, tags: [] },
  { model: 'gpt-4o-mini', at: '2024-03-01T08:00:00.000Z', status: 'SUCCESS', cacheStatus: 'MISS', tokens: [10, 5], costUsd: '0.0625', latencyMs: 50, tags: ['alpha'] },
  { model: 'gpt-4o-mini', at: '2024-03-01T09:00:00.000Z', status: 'SUCCESS', cacheStatus: 'HIT', tokens: [10, 5], costUsd: '0', costSavedUsd: '0.0625', latencyMs: 1, tags: ['alpha'] },
  { model: 'gpt-4o-mini', at: '2024-03-01T23:59:59.999Z', status: 'SUCCESS', cacheStatus: 'HIT', tokens: [10, 5], costUsd: '0', costSavedUsd: '0.0625', latencyMs: 3, tags: [] },
  { model: 'gpt-4o-mini', at: '2024-03-02T00:00:00.000Z', status: 'SUCCESS', cacheStatus: 'REFRESH', tokens: [20, 10], costUsd: '0.125', latencyMs: 80, tags: ['gamma'] },
  { model: 'my-llama', at: '2024-03-02T01:00:00.000Z', status: 'SUCCESS', cacheStatus: 'MISS', tokens: [30, 20], costUsd: null, latencyMs: 120, tags: ['gamma'] },
  { model: 'my-llama', at: '2024-03-02T02:00:00.000Z', status: 'ERROR', cacheStatus: 'MISS', tokens: null, costUsd: null, latencyMs: 1000, tags: ['gamma', 'alpha'] },
];

const march1 = '2024-03-01T00:00:00.000Z';
const march2 = '2024-03-02T00:00:00.000Z';

/** What every bucket holds when it is not grouped by that dimension. */
const ungrouped = { model: null, apiType: null, kind: null, status: null, cacheStatus: null, template: null, tag: null, day: null, hour: null };

function dataOf<T>(result: GraphQLResponse<T>): T {
  expect(result.errors).toBeUndefined();
  return result.data!;
}

describe.each(databaseKinds)('callStats on hand-computed history, on %s', (kind) => {
  let testApp: TestApp;

  beforeAll(async () => {
    testApp = await createTestApp(kind);
    await testApp.services.database.prisma.llmCall.createMany({
      data: rows.map(({ at, tokens, ...row }) => ({
        ...row,
        id: randomUUID(),
        createdAt: new Date(at),
        kind: 'CHAT',
        apiType: 'openai',
        promptTokens: tokens?.[0] ?? null,
        completionTokens: tokens?.[1] ?? null,
        totalTokens: tokens ? tokens[0] + tokens[1] : null,
        errorCode: row.status === 'ERROR' ? 'PROVIDER_UNAVAILABLE' : null,
      })),
    });
  });
  afterAll(() => testApp?.dispose());

  async function stats(groupBy: CallStatsDimension[], filter?: CallFilter) {
    const buckets = dataOf(await testApp.execute(CallStatsQuery, { groupBy, filter })).callStats;
    // Dates compared as instants, whatever the serialisation.
    return buckets.map((bucket) => ({
      ...bucket,
      day: bucket.day === null ? null : new Date(bucket.day).toISOString(),
      hour: bucket.hour === null ? null : new Date(bucket.hour).toISOString(),
    }));
  }

  type Bucket = Awaited<ReturnType<typeof stats>>[number];

  /** Counts and sums exactly; percentiles (interpolated, so inexact in floating point) to 9 decimals. */
  function expectBucket(actual: Bucket | undefined, expected: Bucket) {
    expect(actual, JSON.stringify(expected)).toBeDefined();
    const { latencyP50Ms, latencyP95Ms, ...exact } = expected;
    expect({ ...actual!, latencyP50Ms: undefined, latencyP95Ms: undefined }).toEqual({ ...exact, latencyP50Ms: undefined, latencyP95Ms: undefined });
    expect(actual!.latencyP50Ms).toBeCloseTo(latencyP50Ms!, 9);
    expect(actual!.latencyP95Ms).toBeCloseTo(latencyP95Ms!, 9);
  }

  it('groups by model and UTC day', async () => {
    const buckets = await stats(['MODEL', 'DAY']);
    expect(buckets).toHaveLength(5);
    const find = (model: string, day: string) => buckets.find((bucket) => bucket.model === model && bucket.day === day);

    // Latencies 2, 100, 300: p50 is the middle one; p95 sits at 0.95 * 2 = 1.9, so 100 + 0.9 * (300 - 100).
    expectBucket(find('gpt-4o', march1), {
      ...ungrouped, model: 'gpt-4o', day: march1,
      calls: 3, errors: 1, cacheHits: 1, cacheMisses: 1, hitRate: 0.5,
      promptTokens: 100, completionTokens: 50, costUsd: '0.5', tokensSaved: 150, costSavedUsd: '0.5',
      latencyP50Ms: 100, latencyP95Ms: 280, latencyMaxMs: 300,
    });
    // Neither a hit nor a miss: no hit rate; nothing saved.
    expectBucket(find('gpt-4o', march2), {
      ...ungrouped, model: 'gpt-4o', day: march2,
      calls: 1, errors: 0, cacheHits: 0, cacheMisses: 0, hitRate: null,
      promptTokens: 200, completionTokens: 100, costUsd: '1', tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 400, latencyP95Ms: 400, latencyMaxMs: 400,
    });
    // 23:59:59.999 is still March 1st. Latencies 1, 3, 50: p95 = 3 + 0.9 * 47.
    expectBucket(find('gpt-4o-mini', march1), {
      ...ungrouped, model: 'gpt-4o-mini', day: march1,
      calls: 3, errors: 0, cacheHits: 2, cacheMisses: 1, hitRate: 2 / 3,
      promptTokens: 10, completionTokens: 5, costUsd: '0.0625', tokensSaved: 30, costSavedUsd: '0.125',
      latencyP50Ms: 3, latencyP95Ms: 45.3, latencyMaxMs: 50,
    });
    // A refresh pays but is no miss.
    expectBucket(find('gpt-4o-mini', march2), {
      ...ungrouped, model: 'gpt-4o-mini', day: march2,
      calls: 1, errors: 0, cacheHits: 0, cacheMisses: 0, hitRate: null,
      promptTokens: 20, completionTokens: 10, costUsd: '0.125', tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 80, latencyP95Ms: 80, latencyMaxMs: 80,
    });
    // An unpriced model: tokens count, cost is null rather than 0. Latencies 120, 1000: p50 = 560, p95 = 120 + 0.95 * 880.
    expectBucket(find('my-llama', march2), {
      ...ungrouped, model: 'my-llama', day: march2,
      calls: 2, errors: 1, cacheHits: 0, cacheMisses: 2, hitRate: 0,
      promptTokens: 30, completionTokens: 20, costUsd: null, tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 560, latencyP95Ms: 956, latencyMaxMs: 1000,
    });
  });

  it('groups by cache status: hits spend nothing and save what they would have cost', async () => {
    const buckets = await stats(['CACHE_STATUS']);
    expect(buckets.map((bucket) => bucket.cacheStatus).sort()).toEqual(['BYPASS', 'HIT', 'MISS', 'REFRESH']);
    const find = (cacheStatus: string) => buckets.find((bucket) => bucket.cacheStatus === cacheStatus);

    // Latencies 1, 2, 3: p95 = 2 + 0.9 * 1.
    expectBucket(find('HIT'), {
      ...ungrouped, cacheStatus: 'HIT',
      calls: 3, errors: 0, cacheHits: 3, cacheMisses: 0, hitRate: 1,
      promptTokens: 0, completionTokens: 0, costUsd: '0', tokensSaved: 180, costSavedUsd: '0.625',
      latencyP50Ms: 2, latencyP95Ms: 2.9, latencyMaxMs: 3,
    });
    // Latencies 50, 100, 120, 1000: p50 at 1.5 = 110; p95 at 2.85 = 120 + 0.85 * 880.
    expectBucket(find('MISS'), {
      ...ungrouped, cacheStatus: 'MISS',
      calls: 4, errors: 1, cacheHits: 0, cacheMisses: 4, hitRate: 0,
      promptTokens: 140, completionTokens: 75, costUsd: '0.5625', tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 110, latencyP95Ms: 868, latencyMaxMs: 1000,
    });
    expectBucket(find('REFRESH'), {
      ...ungrouped, cacheStatus: 'REFRESH',
      calls: 1, errors: 0, cacheHits: 0, cacheMisses: 0, hitRate: null,
      promptTokens: 20, completionTokens: 10, costUsd: '0.125', tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 80, latencyP95Ms: 80, latencyMaxMs: 80,
    });
    // Latencies 300, 400: p50 = 350, p95 = 300 + 0.95 * 100.
    expectBucket(find('BYPASS'), {
      ...ungrouped, cacheStatus: 'BYPASS',
      calls: 2, errors: 1, cacheHits: 0, cacheMisses: 0, hitRate: null,
      promptTokens: 200, completionTokens: 100, costUsd: '1', tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 350, latencyP95Ms: 395, latencyMaxMs: 400,
    });
  });

  it('groups by tag: a call counts once in each of its tags, untagged calls are left out', async () => {
    const buckets = await stats(['TAG']);
    expect(buckets.map((bucket) => bucket.tag).sort()).toEqual(['alpha', 'beta', 'gamma']);
    const find = (tag: string) => buckets.find((bucket) => bucket.tag === tag);

    // Rows 1, 2, 5, 6, 10. Latencies 1, 2, 50, 100, 1000: p95 at 3.8 = 100 + 0.8 * 900.
    expectBucket(find('alpha'), {
      ...ungrouped, tag: 'alpha',
      calls: 5, errors: 1, cacheHits: 2, cacheMisses: 3, hitRate: 0.4,
      promptTokens: 110, completionTokens: 55, costUsd: '0.5625', tokensSaved: 165, costSavedUsd: '0.5625',
      latencyP50Ms: 50, latencyP95Ms: 820, latencyMaxMs: 1000,
    });
    // Rows 2 (a hit) and 3 (a bypassed error). Latencies 2, 300: p50 = 151, p95 = 2 + 0.95 * 298.
    expectBucket(find('beta'), {
      ...ungrouped, tag: 'beta',
      calls: 2, errors: 1, cacheHits: 1, cacheMisses: 0, hitRate: 1,
      promptTokens: 0, completionTokens: 0, costUsd: '0', tokensSaved: 150, costSavedUsd: '0.5',
      latencyP50Ms: 151, latencyP95Ms: 285.1, latencyMaxMs: 300,
    });
    // Rows 8, 9, 10. Latencies 80, 120, 1000: p95 = 120 + 0.9 * 880.
    expectBucket(find('gamma'), {
      ...ungrouped, tag: 'gamma',
      calls: 3, errors: 1, cacheHits: 0, cacheMisses: 2, hitRate: 0,
      promptTokens: 50, completionTokens: 30, costUsd: '0.125', tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 120, latencyP95Ms: 912, latencyMaxMs: 1000,
    });
  });

  it('answers one bucket for everything without groupBy', async () => {
    const buckets = await stats([]);
    expect(buckets).toHaveLength(1);
    // Latencies 1, 2, 3, 50, 80, 100, 120, 300, 400, 1000: p50 at 4.5 = 80 + 0.5 * 20; p95 at 8.55 = 400 + 0.55 * 600.
    expectBucket(buckets[0], {
      ...ungrouped,
      calls: 10, errors: 2, cacheHits: 3, cacheMisses: 4, hitRate: 3 / 7,
      promptTokens: 360, completionTokens: 185, costUsd: '1.6875', tokensSaved: 180, costSavedUsd: '0.625',
      latencyP50Ms: 90, latencyP95Ms: 730, latencyMaxMs: 1000,
    });
  });

  it('applies the filter before grouping', async () => {
    // [from, to) of March 1st: the 23:59:59.999 call is in, the midnight one out.
    const byStatus = await stats(['STATUS'], { models: ['gpt-4o', 'gpt-4o-mini'], from: march1, to: march2 });
    expect(byStatus.map((bucket) => bucket.status).sort()).toEqual(['ERROR', 'SUCCESS']);
    // Rows 1, 2, 5, 6, 7. Latencies 1, 2, 3, 50, 100: p95 at 3.8 = 50 + 0.8 * 50.
    expectBucket(byStatus.find((bucket) => bucket.status === 'SUCCESS'), {
      ...ungrouped, status: 'SUCCESS',
      calls: 5, errors: 0, cacheHits: 3, cacheMisses: 2, hitRate: 0.6,
      promptTokens: 110, completionTokens: 55, costUsd: '0.5625', tokensSaved: 180, costSavedUsd: '0.625',
      latencyP50Ms: 3, latencyP95Ms: 90, latencyMaxMs: 100,
    });
    expectBucket(byStatus.find((bucket) => bucket.status === 'ERROR'), {
      ...ungrouped, status: 'ERROR',
      calls: 1, errors: 1, cacheHits: 0, cacheMisses: 0, hitRate: null,
      promptTokens: 0, completionTokens: 0, costUsd: null, tokensSaved: 0, costSavedUsd: null,
      latencyP50Ms: 300, latencyP95Ms: 300, latencyMaxMs: 300,
    });

    const gamma = await stats(['MODEL', 'TAG'], { tags: ['gamma'] });
    // Filtering on a tag keeps the calls, and grouping by tag then shows all their tags.
    expect(gamma.map((bucket) => [bucket.model, bucket.tag, bucket.calls]).sort()).toEqual([
      ['gpt-4o-mini', 'gamma', 1],
      ['my-llama', 'alpha', 1],
      ['my-llama', 'gamma', 2],
    ]);

    const byHour = await stats(['HOUR'], { statuses: ['ERROR'] });
    expect(byHour.map((bucket) => [bucket.hour, bucket.calls]).sort()).toEqual([
      ['2024-03-01T12:00:00.000Z', 1],
      ['2024-03-02T02:00:00.000Z', 1],
    ]);
  });
});
