import { randomBytes, randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { createLimitStore, type KeyLimits, type LimitStore } from '../src/auth/limits.ts';
import { createDatabase, type Database } from '../src/db/database.ts';
import { createTestDatabase, type DatabaseKind } from '../test/support/database.ts';

/*
 * What a limited call costs: `npx tsx bench/limits.ts [calls]` (Postgres from TEST_DATABASE_URL,
 * default postgresql://postgres@127.0.0.1:5432/test, in a database of its own, dropped at the end;
 * PGlite in memory). Prints wall milliseconds and this process's CPU per operation.
 */

const calls = Number(process.argv[2] ?? 2_000);
const generous: KeyLimits = { requestsPerMinute: 1e9, tokensPerMinute: 1e12, usdPerDay: '1000000000', usdPerMonth: '1000000000' };
process.env.TEST_DATABASE_URL ??= 'postgresql://postgres@127.0.0.1:5432/test';

interface Measure {
  name: string;
  concurrency: number;
  wallMs: number;
  cpuMs: number;
}

async function measure(name: string, concurrency: number, count: number, operation: (index: number) => Promise<unknown>): Promise<Measure> {
  let next = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await operation(next++);
    }),
  );
  const wall = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  return { name, concurrency, wallMs: wall / count, cpuMs: (cpu.user + cpu.system) / 1000 / count };
}

async function createKey(database: Database): Promise<string> {
  const id = randomUUID();
  await database.query(
    `INSERT INTO "ApiKey" ("id", "name", "role", "tenant", "prefix", "hash", "createdBy") VALUES ($1, 'bench', 'MEMBER', 'bench', 'cb_bench', $2, 'bench')`,
    [id, randomBytes(32).toString('hex')],
  );
  return id;
}

async function scenarios(kind: DatabaseKind, database: Database, open: (poolSize: number) => Promise<Database>): Promise<Measure[]> {
  const results: Measure[] = [];
  const run = async (concurrency: number) => {
    const pool = concurrency === 1 ? await open(1) : await open(concurrency);
    try {
      const store: LimitStore = createLimitStore({ database: pool });
      const oneKey = await createKey(database);
      const keys = await Promise.all(Array.from({ length: concurrency }, () => createKey(database)));
      const spend = { requests: 1, tokens: 1_000, usd: '0.01' };
      // Warm-up: connections opened, statements planned, rows created.
      await Promise.all([oneKey, ...keys].map((key) => store.reserve(key, generous, spend)));
      await measure('warm-up', concurrency, 200, () => pool.query('SELECT 1'));

      results.push(await measure(`SELECT 1 (a bare round trip)`, concurrency, calls, () => pool.query('SELECT 1')));
      const reservations = new Array(calls);
      results.push(await measure('reserve, one key', concurrency, calls, async (index) => (reservations[index] = await store.reserve(oneKey, generous, spend))));
      results.push(await measure('settle, one key', concurrency, calls, (index) => store.settle(reservations[index], { tokens: 400, usd: '0.004' })));
      if (concurrency > 1) {
        results.push(await measure(`reserve, ${concurrency} keys`, concurrency, calls, async (index) => (reservations[index] = await store.reserve(keys[index % keys.length]!, generous, spend))));
        results.push(await measure(`settle, ${concurrency} keys`, concurrency, calls, (index) => store.settle(reservations[index], { tokens: 400, usd: '0.004' })));
      }
      // The same statements waiting for the WAL flush of each commit: how much of a call is the commit's fsync.
      const durable = createLimitStore({ database: pool, waitForWalFlush: true });
      results.push(await measure('reserve, one key, waitForWalFlush', concurrency, calls, async (index) => (reservations[index] = await durable.reserve(oneKey, generous, spend))));
      results.push(await measure('settle, one key, waitForWalFlush', concurrency, calls, (index) => durable.settle(reservations[index], { tokens: 400, usd: '0.004' })));
      const refuse = (limits: KeyLimits, refusedSpend: typeof spend) => () =>
        store.reserve(limited, limits, refusedSpend).then(
          () => {
            throw new Error('expected a refusal');
          },
          () => undefined,
        );
      const limited = await createKey(database);
      const oneRequestPerMinute = { ...generous, requestsPerMinute: 1 };
      await store.reserve(limited, oneRequestPerMinute, spend);
      results.push(await measure('reserve refused, requests per minute (from memory after the first)', concurrency, Math.min(calls, 500), refuse(oneRequestPerMinute, spend)));
      const thousandTokensPerMinute = { ...generous, requestsPerMinute: null, tokensPerMinute: 1_000 };
      const sixHundredTokens = { ...spend, tokens: 600 };
      await store.reserve(limited, thousandTokensPerMinute, sixHundredTokens);
      results.push(await measure('reserve refused, tokens per minute (two statements)', concurrency, Math.min(calls, 500), refuse(thousandTokensPerMinute, sixHundredTokens)));
    } finally {
      if (pool !== database) await pool.close();
    }
  };
  await run(1);
  if (kind === 'postgres') await run(16);
  return results;
}

async function main(): Promise<void> {
  for (const kind of ['postgres', 'pglite'] as const) {
    const testDatabase = await createTestDatabase(kind);
    try {
      const url = testDatabase.url;
      const results = await scenarios(kind, testDatabase.database, async (poolSize) =>
        url ? createDatabase({ url, dataDir: 'unused', poolSize }) : testDatabase.database,
      );
      console.log(`\n${kind}, ${calls} operations each, load average ${loadavg().map((load) => load.toFixed(1)).join(' ')}\n`);
      console.log('| Operation | Concurrency | Wall ms per operation | Node CPU ms per operation |');
      console.log('|---|---|---|---|');
      for (const result of results) console.log(`| ${result.name} | ${result.concurrency} | ${result.wallMs.toFixed(3)} | ${result.cpuMs.toFixed(3)} |`);
    } finally {
      await testDatabase.dispose();
    }
  }
}

await main();
