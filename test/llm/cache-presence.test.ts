import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { createResponseCache, type CacheEntryValue } from '../../src/llm/cache.ts';
import { createHistoryWriter } from '../../src/llm/history.ts';
import { cacheEntryWrittenChannel } from '../../src/llm/history-rows.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services } from '../../src/services.ts';
import { testConfig } from '../support/app.ts';
import { createTestDatabase, databaseKinds, withClient, type TestDatabase } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { user } from './harness.ts';

/*
 * The presence filter between two instances on one database (on PGlite, two services on its one
 * connection): what the first instance looks up, counted at its Database object, while the second
 * writes entries.
 */

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** A Database that counts the cache's lookups, holds its background key reads while `hold` is set, and records what its listeners heard. */
function observed(database: Database) {
  const seen = {
    lookups: 0,
    keyReads: 0,
    hold: null as ReturnType<typeof deferred> | null,
    heard: [] as string[],
    reconnects: [] as (() => void)[],
    losses: 0,
  };
  const wrapped: Database = {
    ...database,
    query: (sql, parameters, options) => {
      if (options?.name === 'callboard_cache_lookup') seen.lookups += 1;
      return database.query(sql, parameters, options);
    },
    analyticsQuery: async (sql, parameters) => {
      if (sql.includes('SELECT "key" FROM "CacheEntry"')) {
        seen.keyReads += 1;
        if (seen.hold) await seen.hold.promise;
      }
      return database.analyticsQuery(sql, parameters);
    },
    listen: (channel, handler, onReconnect, onLost) =>
      database.listen(
        channel,
        (payload) => {
          handler(payload);
          if (channel === cacheEntryWrittenChannel) seen.heard.push(payload);
        },
        () => {
          onReconnect?.();
          if (channel === cacheEntryWrittenChannel) seen.reconnects.push(() => onReconnect?.());
        },
        () => {
          onLost?.();
          if (channel === cacheEntryWrittenChannel) seen.losses += 1;
        },
      ),
  };
  return { wrapped, seen, heardKeys: () => seen.heard.flatMap((payload) => JSON.parse(payload) as string[]) };
}

describe.each(databaseKinds)('the cache presence filter on %s', (kind) => {
  let fake: FakeOpenAI;
  let testDatabase: TestDatabase;
  let otherDatabase: Database;
  const started: Services[] = [];

  beforeAll(async () => {
    [fake, testDatabase] = await Promise.all([startFakeOpenAI(), createTestDatabase(kind)]);
    otherDatabase = testDatabase.url ? await createDatabase({ url: testDatabase.url, dataDir: 'unused', poolSize: 4 }) : testDatabase.database;
  });

  afterEach(async () => {
    await Promise.all(started.splice(0).map((services) => services.close()));
    fake.reset();
  });

  afterAll(async () => {
    if (otherDatabase && otherDatabase !== testDatabase?.database) await otherDatabase.close();
    await Promise.all([fake?.close(), testDatabase?.dispose()]);
  });

  async function start(database: Database): Promise<Services> {
    const loaded = testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\n`, { OPENAI_API_KEY: 'sk-presence' });
    const services = await createServices({ loaded, database, logger: createLogger('silent') });
    started.push(services);
    return services;
  }

  /** This instance (its lookups counted) and another on the same database. */
  async function twoInstances(options: { holdLoad?: boolean } = {}) {
    const first = observed(testDatabase.database);
    if (options.holdLoad) first.seen.hold = deferred();
    const other = await start(otherDatabase);
    const self = await start(first.wrapped);
    return { self, other, seen: first.seen, heardKeys: first.heardKeys };
  }

  const completed = (services: Services) => vi.waitFor(() => expect(services.cache.presence()?.complete).toBe(true), { timeout: 10_000, interval: 10 });
  const upstreamCalls = () => fake.requestsTo('chat').length;

  it('answers a new key without a database lookup once loaded, and looks every miss up before', async () => {
    const { self, seen } = await twoInstances({ holdLoad: true });

    const beforeLoad = await self.llm.sendMessage({ messages: user('new before the load'), cache: 'USE' });
    expect(beforeLoad.cacheStatus).toBe('MISS');
    expect(seen.lookups).toBe(1);
    expect(self.cache.presence()).toMatchObject({ complete: false });

    seen.hold!.resolve();
    await completed(self);
    const lookupsAtLoad = seen.lookups;
    const misses = [];
    for (let index = 0; index < 5; index++) misses.push(await self.llm.sendMessage({ messages: user(`new after the load ${index}`), cache: 'USE' }));

    expect(misses.map((miss) => miss.cacheStatus)).toEqual(['MISS', 'MISS', 'MISS', 'MISS', 'MISS']);
    expect(seen.lookups).toBe(lookupsAtLoad);
    // Its own entries are still found: from memory, and from the database once memory forgot them.
    await self.history.flush();
    self.cache.forget(null);
    const hit = await self.llm.sendMessage({ messages: user('new after the load 0'), cache: 'USE' });
    expect(hit.cacheStatus).toBe('HIT');
    expect(seen.lookups).toBe(lookupsAtLoad + 1);
    expect(self.cache.presence()).toMatchObject({ capacity: 1_000_000 });
    expect(self.cache.presence()!.bytes).toBeLessThan(1_300_000);
  });

  it('serves from the database an entry written before it started', async () => {
    const writer = await start(otherDatabase);
    const miss = await writer.llm.sendMessage({ messages: user('written before the start'), cache: 'USE' });
    await writer.history.flush();

    const { self, seen } = await twoInstances();
    await completed(self);
    const hit = await self.llm.sendMessage({ messages: user('written before the start'), cache: 'USE' });

    expect(hit.cacheStatus).toBe('HIT');
    expect(hit.message).toEqual(miss.message);
    expect(upstreamCalls()).toBe(1);
    expect(seen.lookups).toBe(1);
    expect(self.cache.presence()).toMatchObject({ complete: true, rowsAtLoad: await entryCount() });
  });

  it("finds another instance's entry once its history announced it, and looks it up before the load is done", async () => {
    const { self, other, seen, heardKeys } = await twoInstances({ holdLoad: true });
    const written = await other.llm.sendMessage({ messages: user('written elsewhere, early'), cache: 'USE' });
    await other.history.flush();
    // Not announced yet or not: before the load completes, a miss of memory reads the database.
    const early = await self.llm.sendMessage({ messages: user('written elsewhere, early'), cache: 'USE' });
    expect(early.cacheStatus).toBe('HIT');
    expect(seen.lookups).toBe(1);

    seen.hold!.resolve();
    await completed(self);
    const later = await other.llm.sendMessage({ messages: user('written elsewhere, later'), cache: 'USE' });
    await other.history.flush();
    await vi.waitFor(() => expect(heardKeys()).toContain(later.call.cacheKey), { timeout: 5000, interval: 5 });
    const hit = await self.llm.sendMessage({ messages: user('written elsewhere, later'), cache: 'USE' });

    expect(hit.cacheStatus).toBe('HIT');
    expect(hit.message).toEqual(later.message);
    expect(seen.lookups).toBe(2);
    expect(upstreamCalls()).toBe(2);
    expect(written.cacheStatus).toBe('MISS');
  });

  it('announces a batch of many entries in notifications under 8,000 bytes', async () => {
    const { self, other, seen, heardKeys } = await twoInstances();
    await completed(self);
    const keys = Array.from({ length: 250 }, (_unused, index) => createHash('sha256').update(`presence ${index}`).digest('hex'));
    for (const key of keys) other.cache.store(entryOf(key));
    await other.history.flush();

    await vi.waitFor(() => expect([...new Set(heardKeys())].sort()).toEqual([...keys].sort()), { timeout: 5000, interval: 10 });
    expect(seen.heard.length).toBeGreaterThanOrEqual(3);
    for (const payload of seen.heard) expect(Buffer.byteLength(payload)).toBeLessThan(8000);
    // Heard, they are looked up: the table answers.
    self.cache.forget(null);
    const found = await Promise.all(keys.slice(0, 20).map((key) => self.cache.get(key)));
    expect(found.map((entry) => entry?.key)).toEqual(keys.slice(0, 20));
    expect(seen.lookups).toBe(20);
  });

  it('after its listener reconnects, looks every miss up again until the keys are read again', async () => {
    const { self, seen } = await twoInstances();
    await completed(self);
    await self.llm.sendMessage({ messages: user('before the reconnect'), cache: 'USE' });
    expect(seen.lookups).toBe(0);
    const readsBefore = seen.keyReads;

    seen.hold = deferred();
    if (kind === 'postgres') {
      // The LISTEN connection is cut: database.listen says so at once, and makes a new one after a second.
      await withClient(testDatabase.url!, (client) =>
        client.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = $1`, [`LISTEN "${cacheEntryWrittenChannel}"`]),
      );
      await vi.waitFor(() => expect(seen.losses).toBe(1), { timeout: 10_000, interval: 5 });
      expect(self.cache.presence()).toMatchObject({ complete: false });
      const whileLost = await self.llm.sendMessage({ messages: user('while the listener is lost'), cache: 'USE' });
      expect(whileLost.cacheStatus).toBe('MISS');
      expect(seen.lookups).toBe(1);
      seen.lookups = 0;
      await vi.waitFor(() => expect(seen.reconnects).toHaveLength(1), { timeout: 10_000, interval: 20 });
    } else {
      // PGlite's one in-process connection is never lost: its listener's reconnect is called as Postgres's would be.
      self.cache.loadKeys();
    }
    expect(self.cache.presence()).toMatchObject({ complete: false });
    const during = await self.llm.sendMessage({ messages: user('during the reload'), cache: 'USE' });
    expect(during.cacheStatus).toBe('MISS');
    expect(seen.lookups).toBe(1);

    seen.hold.resolve();
    await completed(self);
    expect(seen.keyReads).toBeGreaterThan(readsBefore);
    await self.llm.sendMessage({ messages: user('after the reload'), cache: 'USE' });
    expect(seen.lookups).toBe(1);
  });

  async function entryCount(): Promise<number> {
    const [row] = await testDatabase.database.query<{ count: number }>(`SELECT count(*)::int AS "count" FROM "CacheEntry"`);
    return row!.count;
  }
});

describe.each(databaseKinds)('the presence filter of one cache on %s', (kind) => {
  let testDatabase: TestDatabase;
  const closing: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    testDatabase = await createTestDatabase(kind);
  });

  afterAll(async () => {
    for (const close of closing.reverse()) await close();
    await testDatabase?.dispose();
  });

  function cacheOn(minKeys: number) {
    const { wrapped, seen } = observed(testDatabase.database);
    const writer = createHistoryWriter({ database: wrapped, logger: createLogger('silent'), spoolDir: testConfig().config.history.spoolDir });
    const cache = createResponseCache({ database: wrapped, memoryEntries: 0, writer, presence: { database: wrapped, minKeys, pageSize: 40 } });
    closing.push(() => writer.close(), () => cache.close());
    return { cache, writer, seen };
  }

  it('is rebuilt for twice the rows when the load finds it too small, and again when past its capacity, never losing a key', async () => {
    const keys = Array.from({ length: 300 }, (_unused, index) => createHash('sha256').update(`one cache ${index}`).digest('hex'));
    const first = cacheOn(100);
    for (const key of keys) first.cache.store(entryOf(key));
    await first.writer.flush();

    const { cache, seen } = cacheOn(100);
    cache.loadKeys();
    await vi.waitFor(() => expect(cache.presence()!.capacity).toBeGreaterThanOrEqual(600), { timeout: 10_000, interval: 10 });
    expect(cache.presence()).toMatchObject({ complete: true, rowsAtLoad: 300 });
    expect(cache.presence()!.capacity).toBeLessThan(700);
    // Two passes of 8 pages of 40: the first filter (100 keys) was found too small.
    expect(seen.keyReads).toBe(16);
    const found = await Promise.all(keys.map((key) => cache.get(key)));
    expect(found.filter((entry) => entry === undefined)).toEqual([]);
    expect(seen.lookups).toBe(300);

    const unseen = Array.from({ length: 200 }, (_unused, index) => createHash('sha256').update(`never stored ${index}`).digest('hex'));
    expect((await Promise.all(unseen.map((key) => cache.get(key)))).every((entry) => entry === undefined)).toBe(true);
    expect(seen.lookups).toBeLessThan(300 + 20);

    // 1,000 more entries written elsewhere, announced to this cache (as services' listener does).
    const more = Array.from({ length: 1000 }, (_unused, index) => createHash('sha256').update(`written later ${index}`).digest('hex'));
    for (const key of more) first.cache.store(entryOf(key));
    await first.writer.flush();
    cache.written(more);
    expect(cache.presence()).toMatchObject({ complete: true });
    // Past its capacity, it is reloaded at twice the keys it holds; that one, finding 1,300 rows, at twice those.
    await vi.waitFor(() => expect(cache.presence()!.capacity).toBeGreaterThanOrEqual(2600), { timeout: 10_000, interval: 10 });
    expect(cache.presence()).toMatchObject({ complete: true, rowsAtLoad: 1300 });
    expect((await Promise.all(more.map((key) => cache.get(key)))).filter((entry) => entry === undefined)).toEqual([]);
    expect((await Promise.all(keys.map((key) => cache.get(key)))).filter((entry) => entry === undefined)).toEqual([]);
  });
});

function entryOf(key: string): CacheEntryValue {
  const now = new Date();
  return {
    key,
    kind: 'CHAT',
    apiType: 'openai',
    model: 'gpt-4o-mini',
    request: { model: 'gpt-4o-mini' },
    response: { answer: key },
    usage: null,
    costUsd: null,
    createdAt: now,
    expiresAt: null,
    createdByCallId: null,
    tenant: 'default',
    apiKeyId: null,
    requestedAt: now,
  };
}
