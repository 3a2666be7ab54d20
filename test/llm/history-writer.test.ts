import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newId } from '../../src/ids.ts';
import type { Database } from '../../src/db/database.ts';
import { cacheKey, type CacheEntryValue } from '../../src/llm/cache.ts';
import { callRecordedChannel, storableJson } from '../../src/llm/history-rows.ts';
import { createHistoryWriter, type CallRecord, type HistoryWriterOptions } from '../../src/llm/history.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../support/database.ts';

function call(overrides: Partial<CallRecord> = {}): CallRecord {
  return {
    id: newId(),
    createdAt: new Date(),
    tenant: 'default',
    apiKeyId: null,
    servedByCallId: null,
    kind: 'CHAT',
    apiType: 'openai',
    model: 'gpt-4o-mini',
    status: 'SUCCESS',
    cacheStatus: 'BYPASS',
    cacheKey: null,
    errorCode: null,
    errorMessage: null,
    streamed: false,
    timeToFirstTokenMs: null,
    attemptCount: 1,
    latencyMs: 12.5,
    promptTokens: 3,
    completionTokens: 4,
    totalTokens: 7,
    estimatedPromptTokens: 3,
    costUsd: null,
    costSavedUsd: null,
    templateName: null,
    templateHash: null,
    tags: ['writer'],
    metadata: { run: 1 },
    requestBody: { messages: [{ role: 'user', content: 'hello' }] },
    responseBody: { choices: [] },
    attempts: [
      { number: 1, startedAt: new Date(), latencyMs: 10, httpStatus: 200, errorCode: null, errorMessage: null, waitMs: null, requestId: 'request-1' },
    ],
    ...overrides,
  };
}

function entry(text: string, response: unknown): CacheEntryValue {
  return {
    key: cacheKey('CHAT', { apiType: 'openai', endpoint: 'https://api.openai.com/v1', tenant: 'default' }, { text }),
    kind: 'CHAT',
    apiType: 'openai',
    model: 'gpt-4o-mini',
    request: { text },
    response,
    usage: null,
    costUsd: null,
    createdAt: new Date(),
    expiresAt: null,
    createdByCallId: null,
    tenant: 'default',
    apiKeyId: null,
    requestedAt: new Date(),
  };
}

function nested(depth: number): unknown {
  let value: unknown = 'bottom';
  for (let level = 0; level < depth; level += 1) value = { level: value };
  return value;
}

/** Log lines as parsed JSON, from a logger at level info. */
function capturedLogger() {
  const lines: { level: number; msg: string; [key: string]: unknown }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger('info', stream), lines, errors: () => lines.filter((line) => line.level >= 50) };
}

/** A real database that can be "down": then every statement goes to a port nothing listens on, and fails as pg fails there. */
function switchable(database: Database) {
  const nowhere = new pg.Pool({ connectionString: 'postgresql://postgres@127.0.0.1:9/none', connectionTimeoutMillis: 1000 });
  const state = { down: false, statements: 0 };
  return {
    state,
    database: {
      query: async <Row,>(sql: string, parameters?: unknown[]) => {
        state.statements += 1;
        if (state.down) return (await nowhere.query(sql, parameters)).rows as Row[];
        return database.query<Row>(sql, parameters);
      },
    } satisfies HistoryWriterOptions['database'],
    close: () => nowhere.end(),
  };
}

describe.each(databaseKinds)('the history writer on %s', (kind) => {
  let testDatabase: TestDatabase;
  let spoolDir: string;
  const writers: { close(): Promise<unknown> }[] = [];

  beforeAll(async () => {
    testDatabase = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await testDatabase.dispose();
  });
  beforeEach(async () => {
    spoolDir = await mkdtemp(join(tmpdir(), 'callboard-writer-'));
  });
  afterEach(async () => {
    await Promise.all(writers.splice(0).map((writer) => writer.close()));
    await rm(spoolDir, { recursive: true, force: true });
  });

  const start = (options: Partial<HistoryWriterOptions> = {}) => {
    const writer = createHistoryWriter({ database: testDatabase.database, logger: createLogger('silent'), spoolDir, flushIntervalMs: 10, ...options });
    writers.push(writer);
    return writer;
  };
  const prisma = () => testDatabase.database.prisma;
  const rowOf = async (id: string) => prisma().llmCall.findUnique({ where: { id }, include: { body: true, attempts: true } });
  const spoolFiles = async () => (await readdir(spoolDir).catch(() => [] as string[])).filter((file) => file.endsWith('.ndjson'));

  it('stores a lone surrogate as U+FFFD, keeps pairs and escaped backslashes, and keeps writing', async () => {
    const writer = start();
    const lone = call({ requestBody: { messages: [{ role: 'user', content: 'bad \ud800 and \udc00x' }] }, tags: ['t\udfff'], errorMessage: 'e\ud800' });
    const pair = call({ requestBody: { text: 'emoji 😀 and a literal \\ud800 and \\\ud800' } });
    const next = call();
    for (const record of [lone, pair, next]) writer.recordCall(record);
    await writer.flush();

    const stored = await rowOf(lone.id);
    expect(stored?.body?.requestBody).toEqual({ messages: [{ role: 'user', content: 'bad \ufffd and \ufffdx' }] });
    expect(stored?.tags).toEqual(['t\ufffd']);
    expect(stored?.errorMessage).toBe('e\ufffd');
    expect((await rowOf(pair.id))?.body?.requestBody).toEqual({ text: 'emoji 😀 and a literal \\ud800 and \\\ufffd' });
    expect(await rowOf(next.id)).not.toBeNull();
  });

  it('announces each call it inserted once, after commit, per tenant and at most 100 ids per notification, not again when written twice or retried', async () => {
    const heard: { tenant: string; ids: string[] }[] = [];
    const stop = await testDatabase.database.listen(callRecordedChannel, (payload) => heard.push(JSON.parse(payload) as { tenant: string; ids: string[] }));
    try {
      const writer = start({ batchSize: 500 });
      const many = Array.from({ length: 250 }, () => call({ tenant: 'announced-a' }));
      const other = call({ tenant: 'announced-b' });
      for (const record of [...many, other]) writer.recordCall(record);
      await writer.flush();
      // A call written again (a spool replayed twice) is inserted once, so it is announced once.
      writer.recordCall(many[0]!);
      await writer.flush();
      // A refused batch is rolled back, announcements included, and written again in halves: each call is heard of once.
      const refused = [call({ tenant: 'announced-c' }), call({ tenant: 'announced-c', promptTokens: 10 ** 12 }), call({ tenant: 'announced-c' })];
      for (const record of refused) writer.recordCall(record);
      await writer.flush();
      await expect.poll(() => heard.flatMap((message) => message.ids).length).toBe(254);
      expect(heard.filter((message) => message.tenant === 'announced-c').flatMap((message) => message.ids).sort()).toEqual(refused.map((record) => record.id).sort());
      const ofA = heard.filter((message) => message.tenant === 'announced-a');
      expect(ofA.map((message) => message.ids.length).sort()).toEqual([100, 100, 50]);
      expect(ofA.flatMap((message) => message.ids).sort()).toEqual(many.map((record) => record.id).sort());
      expect(heard.filter((message) => message.tenant === 'announced-b')).toEqual([{ tenant: 'announced-b', ids: [other.id] }]);
      for (const message of heard) expect(Buffer.byteLength(JSON.stringify(message))).toBeLessThan(8000);
    } finally {
      await stop();
    }
  });

  it('storableJson leaves text without escapes untouched', () => {
    expect(storableJson({ a: 'plain', b: [1, null] })).toBe('{"a":"plain","b":[1,null]}');
    expect(storableJson('\\\\u0000')).toBe(JSON.stringify('\\\\u0000'));
    expect(JSON.parse(storableJson('x\u0000\ud800\udbff\udfff'))).toBe('x\ufffd\ufffd\udbff\udfff');
  });

  it('stores a call whose metadata is nested 5,000 levels reduced, with a note, and writes the rows behind it', async () => {
    const writer = start();
    const deep = call({ metadata: nested(5000) });
    const next = call();
    writer.recordCall(deep);
    writer.recordCall(next);
    await writer.flush();

    const stored = await rowOf(deep.id);
    expect(stored).toMatchObject({ status: 'SUCCESS', model: 'gpt-4o-mini', tags: ['writer'], promptTokens: 3 });
    expect(stored?.body?.metadata).toEqual({ unstorable: expect.stringMatching(/^could not be serialised: /) });
    expect(stored?.body?.requestBody).toEqual(stored?.body?.metadata);
    expect(await rowOf(next.id)).toMatchObject({ body: { metadata: { run: 1 } } });
  });

  it('finds the one row the database refuses in a batch: the others are written whole, it is written reduced with the reason', async () => {
    const { logger, lines } = capturedLogger();
    const writer = start({ logger, batchSize: 50 });
    const good = Array.from({ length: 9 }, () => call());
    // int4 takes no 10^12: Postgres answers 22003 (numeric value out of range), a fault of this row only.
    const bad = call({ promptTokens: 10 ** 12, errorMessage: 'x'.repeat(5000) });
    for (const record of [...good.slice(0, 4), bad, ...good.slice(4)]) writer.recordCall(record);
    await writer.flush();

    for (const record of good) expect(await rowOf(record.id)).toMatchObject({ body: { metadata: { run: 1 } }, attempts: [{ requestId: 'request-1' }] });
    const stored = await rowOf(bad.id);
    expect(stored).toMatchObject({ promptTokens: null, completionTokens: 4, attempts: [] });
    expect(stored?.errorMessage).toHaveLength(1000);
    expect((stored?.body?.metadata as { unstorable: string }).unstorable).toMatch(/^refused by the database: .*out of range/);
    expect(lines.filter((line) => line.msg.includes('stored without its bodies'))).toHaveLength(1);
  });

  it('spills past MAX_PENDING_ROWS to the spool and writes every row once, in order, when the database catches up', async () => {
    const slow = switchable(testDatabase.database);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const writer = start({
      maxPendingRows: 5,
      batchSize: 2,
      database: { query: async (sql, parameters) => (await gate, slow.database.query(sql, parameters)) },
    });
    const calls = Array.from({ length: 30 }, () => call());
    for (const [index, record] of calls.entries()) {
      writer.recordCall(record);
      // The same cache entry saved again and again: the last one must win.
      writer.saveCacheEntry(entry('spilled', { version: index }));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));

    const files = await spoolFiles();
    expect(files.length).toBeGreaterThan(0);
    const spooled = (await Promise.all(files.map((file) => readFile(join(spoolDir, file), 'utf8')))).join('').split('\n').filter(Boolean);
    expect(spooled.length).toBeGreaterThan(40);

    release();
    await writer.flush();
    const rows = await prisma().llmCall.findMany({ where: { id: { in: calls.map((record) => record.id) } } });
    expect(rows).toHaveLength(30);
    expect((await prisma().cacheEntry.findUniqueOrThrow({ where: { key: entry('spilled', null).key } })).response).toEqual({ version: 29 });
    expect(await spoolFiles()).toEqual([]);
    await slow.close();
  });

  it('spools while the database is unreachable, logs the outage once, and a new process writes the spool exactly once', async () => {
    const { logger, errors, lines } = capturedLogger();
    const switched = switchable(testDatabase.database);
    switched.state.down = true;
    const first = createHistoryWriter({ database: switched.database, logger, spoolDir, flushIntervalMs: 10, maxRetryDelayMs: 20 });
    const calls = Array.from({ length: 40 }, () => call());
    const hitEntry = entry('hit while down', { answer: 1 });
    first.saveCacheEntry(hitEntry);
    for (const record of calls) {
      first.recordCall(record);
      first.recordCacheHit(hitEntry.key, new Date());
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(switched.state.statements).toBeGreaterThan(3);
    await first.close();

    expect(errors().map((line) => line.msg)).toEqual([expect.stringMatching(/^history writes failing since .* \(the database is unreachable\)/)]);
    expect(lines.some((line) => line.msg.includes('left in the spool'))).toBe(true);
    expect(await prisma().llmCall.count({ where: { id: { in: calls.map((record) => record.id) } } })).toBe(0);
    const files = await spoolFiles();
    expect(files.length).toBeGreaterThan(0);
    // Kept aside: replaying it again is what a crash between the write and the removal would do.
    const copies = await Promise.all(files.map(async (file) => [file, await readFile(join(spoolDir, file), 'utf8')] as const));

    // No call and no flush: a restarted instance writes what it finds in the spool by itself.
    start({ logger });
    await expect
      .poll(() => prisma().llmCall.count({ where: { id: { in: calls.map((record) => record.id) } } }), { timeout: 5000 })
      .toBe(40);
    expect(await prisma().llmAttempt.count({ where: { callId: { in: calls.map((record) => record.id) } } })).toBe(40);
    expect((await prisma().cacheEntry.findUniqueOrThrow({ where: { key: hitEntry.key } })).hitCount).toBe(40);
    await expect.poll(spoolFiles).toEqual([]);

    for (const [file, text] of copies) await writeFile(join(spoolDir, file), text);
    const third = start();
    await third.flush();
    expect(await prisma().llmCall.count({ where: { id: { in: calls.map((record) => record.id) } } })).toBe(40);
    expect(await prisma().llmCallBody.count({ where: { callId: { in: calls.map((record) => record.id) } } })).toBe(40);
    expect(await prisma().llmAttempt.count({ where: { callId: { in: calls.map((record) => record.id) } } })).toBe(40);
    await switched.close();
  });

  it('reports its state for GET /metrics: rows pending in memory and in the spool, the spool bytes, the write lag, rows written and failed writes', async () => {
    const switched = switchable(testDatabase.database);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const gated = {
      query: async <Row,>(sql: string, parameters?: unknown[]) => {
        await gate;
        return switched.database.query<Row>(sql, parameters);
      },
    } satisfies HistoryWriterOptions['database'];
    const writer = start({ database: gated, maxRetryDelayMs: 20 });
    expect(writer.stats()).toEqual({ memoryRows: 0, spoolRows: 0, spoolBytes: 0, oldestPendingMs: 0, rowsWritten: 0, writeFailures: 0, rowsDropped: 0 });
    const slow = [call(), call(), call()];
    for (const record of slow) writer.recordCall(record);
    const flushing = writer.flush();
    // The batch is taken from the queue and waits on the database: still pending, and getting older.
    expect(writer.stats().memoryRows).toBe(3);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(writer.stats().oldestPendingMs).toBeGreaterThan(0);
    open();
    await flushing;
    expect(writer.stats()).toEqual({ memoryRows: 0, spoolRows: 0, spoolBytes: 0, oldestPendingMs: 0, rowsWritten: 3, writeFailures: 0, rowsDropped: 0 });

    switched.state.down = true;
    writer.recordCall(call());
    writer.recordCall(call());
    await writer.flush();
    await expect.poll(() => writer.stats().spoolRows, { timeout: 5000 }).toBe(2);
    const down = writer.stats();
    expect(down).toMatchObject({ memoryRows: 0, rowsWritten: 3, rowsDropped: 0 });
    expect(down.writeFailures).toBeGreaterThanOrEqual(1);
    expect(down.spoolBytes).toBeGreaterThan(100);
    expect(down.oldestPendingMs).toBeGreaterThanOrEqual(0);

    switched.state.down = false;
    await expect.poll(() => writer.stats().spoolRows, { timeout: 5000 }).toBe(0);
    expect(writer.stats()).toMatchObject({ memoryRows: 0, spoolBytes: 0, oldestPendingMs: 0, rowsWritten: 5, rowsDropped: 0 });
    await switched.close();
  });

  it('resumes a spool segment after the rows already written', async () => {
    const switched = switchable(testDatabase.database);
    switched.state.down = true;
    const first = createHistoryWriter({ database: switched.database, logger: createLogger('silent'), spoolDir, flushIntervalMs: 10, maxRetryDelayMs: 20 });
    const hitEntry = entry('resumed', { answer: 2 });
    first.saveCacheEntry(hitEntry);
    const calls = Array.from({ length: 10 }, () => call());
    for (const record of calls) {
      first.recordCall(record);
      await new Promise((resolve) => setTimeout(resolve, 1));
      first.recordCacheHit(hitEntry.key, new Date());
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await first.close();
    const [file] = await spoolFiles();
    const lines = (await readFile(join(spoolDir, file!), 'utf8')).split('\n').filter(Boolean);
    // As if a process had written the first 5 lines (the entry and the first hits) then died: they must not be written again.
    await writeFile(join(spoolDir, `${file}.done`), '5');
    const hitsInFirstFive = lines.slice(0, 5).filter((line) => line.includes('"kind":"hit"')).reduce((sum, line) => sum + (JSON.parse(line) as { count: number }).count, 0);
    expect(hitsInFirstFive).toBeGreaterThan(0);

    const second = start();
    await second.flush();
    // The entry (line 1) is not written again either: it is not in the table at all.
    expect(await prisma().cacheEntry.count({ where: { key: hitEntry.key } })).toBe(0);
    const writtenCalls = await prisma().llmCall.count({ where: { id: { in: calls.map((record) => record.id) } } });
    expect(writtenCalls).toBe(10 - lines.slice(0, 5).filter((line) => line.includes('"kind":"call"')).length);
    await switched.close();
  });
});

describe('the history writer on close', () => {
  it('reports how many rows it could not write, so that the process can say so in its exit code', async () => {
    let writes = 0;
    const history = createHistoryWriter({
      spoolDir: mkdtempSync(join(tmpdir(), 'callboard-spool-')),
      database: {
        query: async () => {
          writes += 1;
          throw new Error('database is gone');
        },
      },
      logger: createLogger('silent'),
      closeTimeoutMs: 200,
    });
    history.recordCall(call({ id: '0190a8f2-0000-7000-8000-000000000001' }));
    history.recordCall(call({ id: '0190a8f2-0000-7000-8000-000000000002' }));
    history.recordCacheHit('some-key', new Date());

    expect(await history.close()).toEqual({ lost: 3 });
    expect(writes).toBeGreaterThanOrEqual(1);
  });

  it('reports nothing lost when every row was written', async () => {
    const written: unknown[][] = [];
    const history = createHistoryWriter({
      spoolDir: mkdtempSync(join(tmpdir(), 'callboard-spool-')),
      database: {
        query: async <Row,>(_sql: string, parameters?: unknown[]) => {
          written.push(parameters ?? []);
          return [] as Row[];
        },
      },
      logger: createLogger('silent'),
    });
    history.recordCall(call({ id: '0190a8f2-0000-7000-8000-000000000003' }));

    expect(await history.close()).toEqual({ lost: 0 });
    expect(written).toHaveLength(1);
    expect(JSON.parse(written[0]![2] as string)).toMatchObject([{ id: '0190a8f2-0000-7000-8000-000000000003' }]);
  });
});
