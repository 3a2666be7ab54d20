/*
 * What the presence filter saves a cache miss, in process, on the bench's Postgres: the time of
 * `cache.lookup` for a key never stored, with and without the filter (blocks of each in turn, so
 * that the host's load drifts over both alike); and the background load of the keys already in
 * the table: how long it takes, what it takes in memory, and the longest the event loop waited
 * meanwhile.
 *
 *   npx tsx bench/miss-lookup.ts            # BENCH_KEYS=200000 rows seeded, BENCH_LOOKUPS=4000
 *
 * Uses BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test) and a database of its
 * own (callboard_bench_lookup), dropped at the end; BENCH_LOOKUP_PGLITE=1: an in-memory PGlite instead.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createDatabase } from '../src/db/database.ts';
import { migrate, readMigrations } from '../src/db/migrate.ts';
import { createResponseCache, type ResponseCache } from '../src/llm/cache.ts';
import { createBenchDatabase, dropBenchDatabase } from './lib/database.ts';

const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
const name = 'callboard_bench_lookup';
const seeded = Number(process.env.BENCH_KEYS ?? 200_000);
const lookups = Number(process.env.BENCH_LOOKUPS ?? 4000);
const writer = { saveCacheEntry: () => {}, recordCacheHit: () => {} };

const pglite = process.env.BENCH_LOOKUP_PGLITE === '1';
const database = pglite
  ? await createDatabase({ url: null, dataDir: 'memory://' })
  : await createDatabase({ url: await createBenchDatabase(adminUrl, name), dataDir: 'unused', poolSize: 4 });
try {
  await migrate(database, await readMigrations(fileURLToPath(new URL('../prisma/migrations', import.meta.url))));
  await database.query(
    `INSERT INTO "CacheEntry" ("key", "keyVersion", "kind", "apiType", "model", "request", "response")
     SELECT encode(sha256(convert_to('seeded ' || g, 'UTF8')), 'hex'), 2, 'CHAT', 'openai', 'gpt-4o-mini', '{}'::jsonb, '{}'::jsonb
     FROM generate_series(1, $1::int) g`,
    [seeded],
  );
  await database.query('ANALYZE "CacheEntry"');

  const plain = createResponseCache({ database, memoryEntries: 0, writer });
  const filtered = createResponseCache({ database, memoryEntries: 0, writer, presence: { database, ...(process.env.BENCH_PAGE ? { pageSize: Number(process.env.BENCH_PAGE) } : {}) } });
  // The event loop's delay with nothing to do, for as long as the load will take: what the host's load alone does to it.
  const idle = monitorEventLoopDelay({ resolution: 1 });
  idle.enable();
  await new Promise((resolve) => setTimeout(resolve, 2000));
  idle.disable();
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const loadStarted = performance.now();
  filtered.loadKeys();
  while (!filtered.presence()!.complete) await new Promise((resolve) => setTimeout(resolve, 1));
  const loadMs = performance.now() - loadStarted;
  delay.disable();
  const state = filtered.presence()!;
  console.log(
    `load: ${seeded} rows in ${(loadMs / 1000).toFixed(2)} s; filter for ${state.capacity} keys, ${(state.bytes / 1e6).toFixed(2)} MB; ` +
      `event loop delay meanwhile p50 ${(delay.percentile(50) / 1e6).toFixed(2)} ms, p99 ${(delay.percentile(99) / 1e6).toFixed(2)} ms, max ${(delay.max / 1e6).toFixed(2)} ms ` +
      `(idle for 2 s before: p50 ${(idle.percentile(50) / 1e6).toFixed(2)} ms, p99 ${(idle.percentile(99) / 1e6).toFixed(2)} ms, max ${(idle.max / 1e6).toFixed(2)} ms)`,
  );

  const times = { plain: [] as number[], filtered: [] as number[] };
  const time = async (cache: ResponseCache, into: number[]) => {
    const key = randomBytes(32).toString('hex');
    const started = performance.now();
    const found = await cache.lookup(key);
    into.push(performance.now() - started);
    if (found.entry || found.unavailable) throw new Error('a new key was found, or the database could not be read');
  };
  for (let block = 0; block < lookups / 100; block++) {
    for (let index = 0; index < 100; index++) await time(plain, times.plain);
    for (let index = 0; index < 100; index++) await time(filtered, times.filtered);
  }
  const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) * p)]!;
  for (const [label, values] of Object.entries(times)) {
    console.log(`${label.padEnd(8)} lookup of a new key: p50 ${percentile(values, 0.5).toFixed(4)} ms, p95 ${percentile(values, 0.95).toFixed(4)} ms, n ${values.length}`);
  }
  await Promise.all([plain.close(), filtered.close()]);
} finally {
  await database.close();
  if (!pglite) await dropBenchDatabase(adminUrl, name);
}
