import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../src/db/database.ts';
import { createLogger } from '../src/logger.ts';
import { createTestApp, testConfig } from './support/app.ts';
import { purgeHistory, purgeLock, startHistoryPurge, type PurgeResult } from '../src/llm/retention.ts';
import { createTestDatabase, databaseKinds, type TestDatabase } from './support/database.ts';

const dayMs = 86_400_000;

/** `count` calls made at `at`, each with a body and two attempts. */
async function insertCalls(database: Database, at: Date, count: number): Promise<void> {
  await database.query(
    `INSERT INTO "LlmCall" ("id", "createdAt", "kind", "apiType", "model", "status", "cacheStatus", "latencyMs")
     SELECT gen_random_uuid(), $1::timestamptz, 'CHAT', 'openai', 'gpt-4o-mini', 'SUCCESS', 'MISS', 1 FROM generate_series(1, $2::int)`,
    [at, count],
  );
  await database.query(`INSERT INTO "LlmCallBody" ("callId", "metadata") SELECT "id", '{"kept": false}' FROM "LlmCall" WHERE "createdAt" = $1`, [at]);
  await database.query(
    `INSERT INTO "LlmAttempt" ("id", "callId", "number", "startedAt", "latencyMs")
     SELECT gen_random_uuid(), c."id", n, $1::timestamptz, 1 FROM "LlmCall" c CROSS JOIN generate_series(1, 2) n WHERE c."createdAt" = $1`,
    [at],
  );
}

/** Cache entries named `${prefix}-<n>`, expiring at `expiresAt` (null: never). */
async function insertEntries(database: Database, prefix: string, expiresAt: Date | null, count: number): Promise<void> {
  await database.query(
    `INSERT INTO "CacheEntry" ("key", "keyVersion", "kind", "apiType", "model", "request", "response", "expiresAt")
     SELECT $1 || '-' || n, 2, 'CHAT', 'openai', 'gpt-4o-mini', '{}', '{}', $2::timestamptz FROM generate_series(1, $3::int) n`,
    [prefix, expiresAt, count],
  );
}

async function counts(database: Database) {
  const [row] = await database.query<Record<string, string | number>>(
    `SELECT (SELECT count(*) FROM "LlmCall") AS "calls", (SELECT count(*) FROM "LlmCallBody") AS "bodies", (SELECT count(*) FROM "LlmAttempt") AS "attempts",
       (SELECT count(*) FROM "LlmCall" WHERE "createdAt" < now() - interval '30 days') AS "oldCalls",
       (SELECT count(*) FROM "CacheEntry") AS "entries", (SELECT count(*) FROM "CacheEntry" WHERE "expiresAt" < now()) AS "expiredEntries"`,
  );
  return Object.fromEntries(Object.entries(row!).map(([name, value]) => [name, Number(value)]));
}

/** A database whose first purge DELETE, once answered, runs `meanwhile` before the purge goes on: the lock is held then. */
function pausedAfterFirstDelete(database: Database, meanwhile: () => Promise<void>): Database {
  let done = false;
  return {
    ...database,
    withSession: (work) =>
      database.withSession((session) =>
        work({
          ...session,
          query: async (sql, parameters) => {
            const rows = await session.query(sql, parameters);
            if (!done && sql.includes('DELETE FROM "LlmCall"')) {
              done = true;
              await meanwhile();
            }
            return rows as never;
          },
        }),
      ),
  };
}

describe.each(databaseKinds)('the retention purge on %s', (kind) => {
  let testDatabase: TestDatabase;
  let database: Database;
  const now = Date.now();

  beforeAll(async () => {
    testDatabase = await createTestDatabase(kind);
    database = testDatabase.database;
  });
  afterAll(() => testDatabase?.dispose());
  beforeEach(async () => {
    await database.query('DELETE FROM "LlmCall"');
    await database.query('DELETE FROM "CacheEntry"');
    await insertCalls(database, new Date(now - 40 * dayMs), 25);
    await insertCalls(database, new Date(now - 31 * dayMs), 2);
    await insertCalls(database, new Date(now - 29 * dayMs), 3);
    await insertCalls(database, new Date(now - 60_000), 4);
    await insertEntries(database, 'expired', new Date(now - 1000), 12);
    await insertEntries(database, 'live', new Date(now + dayMs), 3);
    await insertEntries(database, 'forever', null, 2);
  });

  it('deletes the calls past the retention with their bodies and attempts, and expired cache entries, in batches', async () => {
    expect(await counts(database)).toEqual({ calls: 34, bodies: 34, attempts: 68, oldCalls: 27, entries: 17, expiredEntries: 12 });
    const result = await purgeHistory(database, { retentionDays: 30, batchSize: 10, pauseMs: 0 });
    expect(result).toEqual<PurgeResult>({ ran: true, deleted: { LlmCall: 27, LlmCallBody: 27, LlmAttempt: 54, CacheEntry: 12 }, statements: 3 + 2 });
    // The newer calls and their bodies and attempts stay; so do live entries and those that never expire.
    expect(await counts(database)).toEqual({ calls: 7, bodies: 7, attempts: 14, oldCalls: 0, entries: 5, expiredEntries: 0 });
    const keys = await database.query<{ key: string }>('SELECT "key" FROM "CacheEntry" ORDER BY "key"');
    expect(keys.map((row) => row.key.split('-')[0])).toEqual(['forever', 'forever', 'live', 'live', 'live']);
    // The emptied hours are marked for the rollup to roll up again, from the calls that are left.
    const [pending] = await database.query<{ count: string | number }>(
      `SELECT count(*) AS "count" FROM "LlmCallRollupPending" WHERE "hour" < now() - interval '30 days'`,
    );
    expect(Number(pending!.count)).toBeGreaterThanOrEqual(2);

    expect(await purgeHistory(database, { retentionDays: 30, batchSize: 10, pauseMs: 0 })).toMatchObject({ ran: true, statements: 2, deleted: { LlmCall: 0, CacheEntry: 0 } });
  });

  it('keeps every call without a retention, and still deletes expired cache entries', async () => {
    const result = await purgeHistory(database, { retentionDays: null, batchSize: 1000 });
    expect(result.deleted).toEqual({ LlmCall: 0, LlmCallBody: 0, LlmAttempt: 0, CacheEntry: 12 });
    expect(await counts(database)).toMatchObject({ calls: 34, bodies: 34, attempts: 68, entries: 5 });
  });

  it('purges on one instance at a time: a second job finds the lock held and does nothing', async () => {
    // Another instance on Postgres (its own pool, its own session); on PGlite, another job of this process.
    const other = kind === 'postgres' ? await createDatabase({ url: testDatabase.url, dataDir: 'unused', poolSize: 2 }) : database;
    try {
      let second: PurgeResult | undefined;
      const first = await purgeHistory(
        pausedAfterFirstDelete(database, async () => {
          second = await purgeHistory(other, { retentionDays: 30, batchSize: 10, pauseMs: 0 });
          // Between two batches nothing is locked: the history's writes go on.
          await insertCalls(other, new Date(now - 1000), 1);
        }),
        { retentionDays: 30, batchSize: 10, pauseMs: 0 },
      );
      expect(second).toEqual({ ran: false, deleted: { LlmCall: 0, LlmCallBody: 0, LlmAttempt: 0, CacheEntry: 0 }, statements: 0 });
      expect(first).toMatchObject({ ran: true, deleted: { LlmCall: 27, CacheEntry: 12 } });
      expect((await counts(database)).calls).toBe(7 + 1);
      // The lock is given back: the other one purges next time (nothing left).
      expect(await purgeHistory(other, { retentionDays: 30 })).toMatchObject({ ran: true, deleted: { LlmCall: 0 } });
      if (kind === 'postgres') {
        const [held] = await database.query<{ count: string | number }>(`SELECT count(*) AS "count" FROM pg_locks WHERE locktype = 'advisory' AND objid = $1`, [purgeLock]);
        expect(Number(held!.count)).toBe(0);
      }
    } finally {
      if (other !== database) await other.close();
    }
  });

  it('is configured by [History] RETENTION_DAYS and PURGE_BATCH_SIZE, and counts on services.metrics', async () => {
    const testApp = await createTestApp(kind, testConfig('[History]\nRETENTION_DAYS=30\nPURGE_BATCH_SIZE=7\n'));
    try {
      const appDatabase = testApp.services.database;
      await insertCalls(appDatabase, new Date(now - 45 * dayMs), 9);
      await insertCalls(appDatabase, new Date(now - 2 * dayMs), 1);
      expect(await testApp.services.purge.run()).toMatchObject({ ran: true, deleted: { LlmCall: 9, LlmCallBody: 9, LlmAttempt: 18 }, statements: 2 + 1 });
      expect((await counts(appDatabase)).calls).toBe(1);
      expect(await testApp.services.metrics.registry.metrics()).toContain('callboard_purged_rows_total{table="LlmCall"} 9');
    } finally {
      await testApp.dispose();
    }
  });

  it('counts its runs and the rows it deleted in the metrics', async () => {
    const registry = new Registry();
    const logger = createLogger('silent');
    // Interval 0: no timer, runs only when asked.
    const job = startHistoryPurge({ database, logger, registry, intervalMs: 0, retentionDays: 30, batchSize: 10, pauseMs: 0 });
    const otherJob = startHistoryPurge({ database: pausedAfterFirstDelete(database, async () => void (await job.run())), logger, registry, intervalMs: 0, retentionDays: 30, pauseMs: 0 });
    try {
      // otherJob holds the lock while job runs: job's run is skipped.
      await otherJob.run();
      const value = async (name: string, labels: Record<string, string>) =>
        (await registry.getSingleMetric(name)!.get()).values.find((entry) => Object.entries(labels).every(([label, wanted]) => entry.labels[label] === wanted))?.value ?? 0;
      expect(await value('callboard_purge_runs_total', { result: 'ok' })).toBe(1);
      expect(await value('callboard_purge_runs_total', { result: 'skipped' })).toBe(1);
      expect(await value('callboard_purged_rows_total', { table: 'LlmCall' })).toBe(27);
      expect(await value('callboard_purged_rows_total', { table: 'LlmCallBody' })).toBe(27);
      expect(await value('callboard_purged_rows_total', { table: 'LlmAttempt' })).toBe(54);
      expect(await value('callboard_purged_rows_total', { table: 'CacheEntry' })).toBe(12);
      expect(await registry.metrics()).toContain('callboard_purged_rows_total{table="LlmCall"} 27');
    } finally {
      await job.stop();
      await otherJob.stop();
    }
  });
});
