import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.ts';
import { createDatabase, type Database } from '../src/db/database.ts';
import { createLogger } from '../src/logger.ts';
import { createServices } from '../src/services.ts';
import { testConfig } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/database.ts';

// statement_timeout and a second pool exist only on a Postgres server; PGlite's one in-process
// connection has neither (its analyticsQuery is its query, see src/db/database.ts).
describe.skipIf(!process.env.TEST_DATABASE_URL)('the analytics pool, on postgres', () => {
  let testDatabase: TestDatabase;
  let bounded: Database;

  beforeAll(async () => {
    testDatabase = await createTestDatabase('postgres');
    bounded = await createDatabase({ url: testDatabase.url, dataDir: 'unused', poolSize: 2, analyticsPoolSize: 2, analyticsStatementTimeoutMs: 300 });
  });

  afterAll(async () => {
    await bounded?.close();
    await testDatabase?.dispose();
  });

  it('stops an analytics read past the timeout with QUERY_TIMEOUT, and leaves plain queries unbounded', async () => {
    await expect(bounded.analyticsQuery('SELECT pg_sleep(2)')).rejects.toMatchObject({ code: 'QUERY_TIMEOUT', details: { timeoutMs: 300 } });
    await expect(bounded.query('SELECT pg_sleep(0.5), 1 AS "one"')).resolves.toEqual([{ pg_sleep: '', one: 1 }]);
  });

  it('keeps the connections of calls free while every analytics connection is busy', async () => {
    const slowReads = Array.from({ length: 3 }, () => bounded.analyticsQuery('SELECT pg_sleep(2)').then(() => 'finished', (error: { code?: string }) => error.code));
    let readsSettled = false;
    const settled = Promise.all(slowReads).finally(() => (readsSettled = true));
    const [row] = await bounded.query<{ one: number }>('SELECT 1 AS "one"');
    expect(row).toEqual({ one: 1 });
    expect(readsSettled).toBe(false);
    // Two run into statement_timeout; the third waits for a connection, then runs into it too.
    expect(await settled).toEqual(['QUERY_TIMEOUT', 'QUERY_TIMEOUT', 'QUERY_TIMEOUT']);
  });

  it('answers a callStats past the timeout with QUERY_TIMEOUT through the API', async () => {
    await testDatabase.database.query(
      `INSERT INTO "LlmCall" ("id", "createdAt", "kind", "apiType", "model", "status", "cacheStatus", "latencyMs", "tags")
       SELECT gen_random_uuid(), now() - g * interval '1 second', 'CHAT', 'openai', 'model-' || (g % 7), 'SUCCESS', 'MISS', g % 1000, ARRAY['t' || (g % 13), 'u' || (g % 5)]
       FROM generate_series(1, 50000) g`,
    );
    const hasty = await createDatabase({ url: testDatabase.url, dataDir: 'unused', poolSize: 2, analyticsStatementTimeoutMs: 5 });
    const services = await createServices({ loaded: testConfig(), database: hasty, logger: createLogger('silent') });
    const app = createApp(services);
    try {
      const response = await app.fetch('http://callboard/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ callStats(groupBy: [TAG, HOUR]) { tag hour calls latencyP95Ms } }' }),
      });
      const body = (await response.json()) as { errors?: { message: string; extensions?: { code?: string } }[] };
      expect(body.errors?.[0]?.extensions?.code).toBe('QUERY_TIMEOUT');
      expect(body.errors?.[0]?.message).toMatch(/ANALYTICS_STATEMENT_TIMEOUT_MS/);
    } finally {
      await app.dispose();
      await services.close();
      await hasty.close();
    }
  });
});
