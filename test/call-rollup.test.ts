import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rollUpCalls } from '../src/analytics/call-rollup.ts';
import { callStats, type CallStatsBucket, type CallStatsDimension } from '../src/analytics/call-stats.ts';
import { withinTenant, type CallFilter } from '../src/analytics/calls.ts';
import { createTestDatabase, databaseKinds, type TestDatabase } from './support/database.ts';
import { randomGenerator } from './support/seeded-random.ts';
import { formatPicoUsd, sumUsd } from '../src/money.ts';

const hourMs = 3_600_000;
const models = ['gpt-4o-mini', 'gpt-4o', 'o3-mini', 'text-embedding-3-small'];
const tenants = ['acme', 'globex', 'default'];
const keys = ['0190f3b2-0000-7000-8000-000000000001', '0190f3b2-0000-7000-8000-000000000002', null];
const cacheStatuses = ['HIT', 'MISS', 'REFRESH', 'BYPASS'];
const templates = ['a.system.mustache', 'b.user.mustache', null];

function costs(cost: string | null, hit: boolean): { costUsd: string | null; costSavedUsd: string | null } {
  return hit ? { costUsd: '0', costSavedUsd: cost } : { costUsd: cost, costSavedUsd: null };
}

/** `count` calls spread over [start, end): every column callStats reads varies, latencies from 0.1 ms to a minute. */
function generateCalls(random: () => number, count: number, start: number, end: number): Record<string, unknown>[] {
  const pick = <T,>(values: readonly T[]) => values[Math.floor(random() * values.length)]!;
  return Array.from({ length: count }, () => {
    const model = pick(models);
    const cacheStatus = pick(cacheStatuses);
    const failed = cacheStatus !== 'HIT' && random() < 0.1;
    const prompt = failed ? null : Math.floor(random() * 2000);
    const completion = failed ? null : Math.floor(random() * 500);
    return {
      id: crypto.randomUUID(),
      createdAt: new Date(start + random() * (end - start)).toISOString(),
      tenant: pick(tenants),
      apiKeyId: pick(keys),
      kind: model.startsWith('text-') ? 'EMBEDDING' : 'CHAT',
      apiType: random() < 0.2 ? 'azure' : 'openai',
      model,
      status: failed ? 'ERROR' : 'SUCCESS',
      cacheStatus,
      errorCode: failed ? pick(['PROVIDER_TIMEOUT', 'RETRY_EXHAUSTED']) : null,
      latencyMs: random() < 0.01 ? 0 : Math.exp(Math.log(0.1) + random() * Math.log(600_000)),
      promptTokens: prompt,
      completionTokens: completion,
      totalTokens: prompt === null ? null : prompt + completion!,
      // Up to 12 significant decimals: a float sum of these would drift; the numeric one is exact. A hit spent 0 and saved the cost.
      ...costs(failed || model === 'o3-mini' ? null : formatPicoUsd(BigInt(Math.floor(random() * 1e10))), cacheStatus === 'HIT'),
      templateName: pick(templates),
      tags: random() < 0.5 ? [pick(['team:a', 'team:b', 'env:prod'])] : [],
    };
  });
}

async function insertCalls(testDatabase: TestDatabase, calls: Record<string, unknown>[]): Promise<void> {
  for (let offset = 0; offset < calls.length; offset += 500) {
    await testDatabase.database.query(
      `INSERT INTO "LlmCall" ("id", "createdAt", "tenant", "apiKeyId", "kind", "apiType", "model", "status", "cacheStatus", "errorCode", "latencyMs",
         "promptTokens", "completionTokens", "totalTokens", "costUsd", "costSavedUsd", "templateName", "tags")
       SELECT "id", "createdAt", "tenant", "apiKeyId", "kind", "apiType", "model", "status", "cacheStatus", "errorCode", "latencyMs",
         "promptTokens", "completionTokens", "totalTokens", "costUsd", "costSavedUsd", "templateName", "tags"
       FROM jsonb_to_recordset($1::jsonb) AS c("id" uuid, "createdAt" timestamptz, "tenant" text, "apiKeyId" uuid, "kind" "CallKind", "apiType" text, "model" text,
         "status" "CallStatus", "cacheStatus" "CacheStatus", "errorCode" text, "latencyMs" float8, "promptTokens" int, "completionTokens" int, "totalTokens" int,
         "costUsd" numeric, "costSavedUsd" numeric, "templateName" text, "tags" text[])`,
      [JSON.stringify(calls.slice(offset, offset + 500))],
    );
  }
}

describe.each(databaseKinds)('callStats from the rollup, on %s', (kind) => {
  let testDatabase: TestDatabase;
  /** Statements callStats sent, to tell which path answered. */
  let sent: string[] = [];
  let generated: Record<string, unknown>[] = [];
  const random = randomGenerator(20261202);
  const now = Date.now();
  const start = now - 3 * 24 * hourMs;

  const stats = (filter: CallFilter | null | undefined, groupBy: CallStatsDimension[], exact = false) =>
    callStats(
      {
        query: (sql, parameters) => {
          sent.push(sql);
          return testDatabase.database.query(sql, parameters);
        },
      },
      filter,
      groupBy,
      { exact },
    );

  /** The rollup's answer equals the exact one for every count and sum; its percentiles are within 1%. */
  async function expectLikeExact(filter: CallFilter | null | undefined, groupBy: CallStatsDimension[]): Promise<CallStatsBucket[]> {
    sent = [];
    const rolled = await stats(filter, groupBy);
    expect(sent.some((sql) => sql.includes('FROM "LlmCallRollup" r, bounds b'))).toBe(true);
    const exact = await stats(filter, groupBy, true);
    expect(rolled.map(({ latencyP50Ms, latencyP95Ms, costUsd, costSavedUsd, ...rest }) => rest)).toEqual(
      exact.map(({ latencyP50Ms, latencyP95Ms, costUsd, costSavedUsd, ...rest }) => rest),
    );
    expect(exact.length).toBeGreaterThan(0);
    rolled.forEach((bucket, index) => {
      const truth = exact[index]!;
      for (const field of ['costUsd', 'costSavedUsd'] as const) {
        // Exact decimals: the rollup's sums are the calls' to the picodollar.
        expect(bucket[field]).toBe(truth[field]);
      }
      for (const field of ['latencyP50Ms', 'latencyP95Ms'] as const) {
        const error = truth[field] === 0 ? bucket[field]! : Math.abs(bucket[field]! / truth[field]! - 1);
        expect(error, `${field} of ${JSON.stringify(bucket)}`).toBeLessThanOrEqual(0.01);
      }
    });
    return rolled;
  }

  beforeAll(async () => {
    testDatabase = await createTestDatabase(kind);
    generated = generateCalls(random, 4000, start, now);
    await insertCalls(testDatabase, generated);
    const { steps } = await rollUpCalls(testDatabase.database);
    expect(steps.reduce((sum, step) => sum + step.rows, 0)).toBeGreaterThan(100);
  }, 120_000);
  afterAll(() => testDatabase?.dispose());

  it('answers every count and sum as the calls do, and p50/p95 within 1%, for each kind of grouping and filter', async () => {
    const hourAgo = new Date(now - 30 * 60_000 - 26 * hourMs);
    const cases: [CallFilter | null, CallStatsDimension[]][] = [
      [null, ['MODEL', 'DAY']],
      [null, []],
      [null, ['TENANT', 'API_KEY', 'KIND']],
      [null, ['STATUS', 'CACHE_STATUS', 'HOUR']],
      [{ from: new Date(start + 5.5 * hourMs), to: hourAgo }, ['MODEL', 'API_TYPE', 'TEMPLATE']],
      [{ models: ['gpt-4o', 'o3-mini'], from: new Date(start + 30.25 * hourMs) }, ['MODEL', 'DAY']],
      [{ statuses: ['ERROR'], cacheStatuses: ['MISS', 'REFRESH'], apiTypes: ['openai'] }, ['DAY']],
      [{ templateNames: ['a.system.mustache'], apiKeyIds: [keys[0]!] }, ['TENANT']],
    ];
    for (const [filter, groupBy] of cases) await expectLikeExact(filter, groupBy);
  });

  it('sums USD spent and saved exactly over thousands of calls, from the rollup as from the calls', async () => {
    const total = (field: 'costUsd' | 'costSavedUsd') => sumUsd(generated.map((call) => call[field] as string | null));
    const expected = { costUsd: total('costUsd'), costSavedUsd: total('costSavedUsd') };
    // Digits down to the picodollar: a float sum would have lost some.
    expect(expected.costUsd).toMatch(/^\d+\.\d{9,12}$/);
    sent = [];
    const [rolled] = await stats(null, []);
    expect(sent.some((sql) => sql.includes('FROM "LlmCallRollup" r, bounds b'))).toBe(true);
    expect({ costUsd: rolled!.costUsd, costSavedUsd: rolled!.costSavedUsd }).toEqual(expected);
    const [exact] = await stats(null, [], true);
    expect({ costUsd: exact!.costUsd, costSavedUsd: exact!.costSavedUsd }).toEqual(expected);
  });

  it('counts rows written late into hours already rolled up, and rows deleted from them, before and after the next rollup', async () => {
    const before = await stats(null, []);
    const lateStart = start + 10 * hourMs;
    const late = generateCalls(random, 50, lateStart, lateStart + 2 * hourMs);
    await insertCalls(testDatabase, late);
    const pending = await testDatabase.database.query<{ hour: Date }>('SELECT "hour" FROM "LlmCallRollupPending" WHERE "hour" < $1', [new Date(now - hourMs)]);
    expect(pending.length).toBeGreaterThanOrEqual(2);
    const withLate = await expectLikeExact(null, ['MODEL', 'DAY']);
    expect(withLate.reduce((sum, bucket) => sum + bucket.calls, 0)).toBe(before[0]!.calls + 50);
    await testDatabase.database.query(`DELETE FROM "LlmCall" WHERE "id" = ANY($1::uuid[])`, [late.slice(0, 10).map((call) => call.id)]);
    expect((await expectLikeExact(null, []))[0]!.calls).toBe(before[0]!.calls + 40);

    const { steps } = await rollUpCalls(testDatabase.database);
    expect(steps.reduce((sum, step) => sum + step.redone, 0)).toBeGreaterThanOrEqual(2);
    expect(await testDatabase.database.query('SELECT "hour" FROM "LlmCallRollupPending" WHERE "hour" < $1', [new Date(now - hourMs)])).toEqual([]);
    expect((await expectLikeExact(null, ['MODEL', 'DAY'])).reduce((sum, bucket) => sum + bucket.calls, 0)).toBe(before[0]!.calls + 40);
    await expectLikeExact({ from: new Date(lateStart - 0.5 * hourMs), to: new Date(lateStart + 3.5 * hourMs) }, ['STATUS', 'HOUR']);
  });

  it("reads only a non-admin's own tenant, as the calls do", async () => {
    const scoped = await expectLikeExact(withinTenant({ tenants: ['globex', 'acme'] }, 'acme'), ['TENANT', 'MODEL', 'DAY']);
    expect(new Set(scoped.map((bucket) => bucket.tenant))).toEqual(new Set(['acme']));
    const admin = await expectLikeExact(withinTenant({ tenants: ['globex', 'acme'] }, null), ['TENANT']);
    expect(admin.map((bucket) => bucket.tenant)).toEqual(['acme', 'globex']);
  });

  it('answers TAG and filters the rollup does not keep from the calls, exactly', async () => {
    for (const [filter, groupBy] of [
      [null, ['TAG', 'MODEL']],
      [{ tags: ['team:a'] }, ['MODEL']],
      [{ errorCodes: ['PROVIDER_TIMEOUT'] }, ['DAY']],
    ] as [CallFilter | null, CallStatsDimension[]][]) {
      sent = [];
      const answer = await stats(filter, groupBy);
      expect(sent.some((sql) => sql.includes('LlmCallRollup'))).toBe(false);
      expect(answer).toEqual(await stats(filter, groupBy, true));
      expect(answer.length).toBeGreaterThan(0);
    }
  });

  it('starts over after a TRUNCATE', async () => {
    await testDatabase.database.query('TRUNCATE "LlmCall" CASCADE');
    expect(await testDatabase.database.query('SELECT 1 FROM "LlmCallRollup" UNION ALL SELECT 1 FROM "LlmCallRollupState"')).toEqual([]);
    await insertCalls(testDatabase, generateCalls(random, 300, start, now));
    await rollUpCalls(testDatabase.database);
    await expectLikeExact(null, ['MODEL', 'DAY']);
  });
});
