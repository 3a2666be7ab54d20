import { compareUsd, usdOrNull } from '../../src/money.ts';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { createDatabase, type Database } from '../../src/db/database.ts';
import type { ChatMessage } from '../../src/llm/client.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services } from '../../src/services.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

const user = (content: string): ChatMessage[] => [{ role: 'user', content }];

/** Polls until the condition holds (a notification crosses connections asynchronously); fails after 5 s. */
async function waitUntil(condition: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.each(databaseKinds)('the cache graph across two instances on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let otherDatabase: Database;
  let other: Services;
  let otherApp: App;
  let answers = 0;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n[Prices]\ngpt-4o-mini=1, 1\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-graph' }));
    const url = testApp.testDatabase.url;
    // On PGlite only one process opens the database: the second instance shares the connection, as in the other tests.
    otherDatabase = url ? await createDatabase({ url, dataDir: 'unused', poolSize: 2 }) : testApp.testDatabase.database;
    other = await createServices({ loaded: testApp.services.loaded, database: otherDatabase, logger: createLogger('silent') });
    otherApp = createApp(other);
  });

  afterEach(() => fake.reset());

  afterAll(async () => {
    await otherApp?.dispose();
    await other?.close();
    if (otherDatabase && otherDatabase !== testApp?.testDatabase.database) await otherDatabase.close();
    await testApp?.dispose();
    await fake?.close();
  });

  /** Each upstream answer says which one it is, so a test can tell an old answer from a new one. */
  const numbered = (delayMs = 0) =>
    fake.script('chat', () => {
      answers += 1;
      return { json: chatCompletion({ model: 'gpt-4o-mini', content: `answer ${answers}` }), delayMs };
    });

  it('a REFRESH on one instance stops the other from serving the old answer it remembers', async () => {
    numbered();
    const first = await testApp.services.llm.sendMessage({ messages: user('refresh me'), cache: 'USE' });
    await testApp.services.history.flush();
    // The other instance hears of the new entry (its presence filter) a moment after it is written.
    await waitUntil(() => other.cache.mayHold(first.call.cacheKey!));
    const remembered = await other.llm.sendMessage({ messages: user('refresh me'), cache: 'USE' });
    expect(remembered.cacheStatus).toBe('HIT');
    expect(remembered.message.content).toBe(first.message.content);

    const refreshed = await testApp.services.llm.sendMessage({ messages: user('refresh me'), cache: 'REFRESH' });
    expect(refreshed.message.content).not.toBe(first.message.content);
    await waitUntil(async () => (await other.llm.sendMessage({ messages: user('refresh me'), cache: 'USE' })).message.content === refreshed.message.content);
  });

  it('an invalidation cannot be undone by a miss that was in flight on the other instance', async () => {
    numbered(400);
    const inFlight = other.llm.sendMessage({ messages: user('invalidate me while in flight'), cache: 'USE' });
    await waitUntil(() => fake.requestsTo('chat').length === 1);
    const invalidated = await testApp.app.fetch('http://localhost/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'mutation { invalidateCache { deleted } }' }),
    });
    expect(((await invalidated.json()) as { errors?: unknown }).errors).toBeUndefined();
    const answered = await inFlight;
    expect(answered.cacheStatus).toBe('MISS');
    await other.history.flush();
    const rows = await testApp.testDatabase.database.query('SELECT 1 FROM "CacheEntry" WHERE "key" = $1', [answered.call.cacheKey]);
    expect(rows).toEqual([]);
    // Neither instance serves it from memory or from the database: the next call goes upstream.
    expect((await other.llm.sendMessage({ messages: user('invalidate me while in flight'), cache: 'USE' })).cacheStatus).toBe('MISS');
    expect(fake.requestsTo('chat')).toHaveLength(2);
    const [audit] = await testApp.testDatabase.database.query<{ invalidatedBy: string }>('SELECT "invalidatedBy" FROM "CacheInvalidation" ORDER BY "at" DESC LIMIT 1');
    expect(audit!.invalidatedBy).toBe('open mode');
  });

  it('a served call links to the entry that served it, not to a later answer under its key', async () => {
    numbered();
    const miss = await testApp.services.llm.sendMessage({ messages: user('link me'), cache: 'USE' });
    const hit = await testApp.services.llm.sendMessage({ messages: user('link me'), cache: 'USE' });
    expect(hit.call.servedByCallId).toBe(miss.call.id);
    await testApp.services.history.flush();
    const entryOf = async (id: string) => {
      const response = await testApp.app.fetch('http://localhost/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: 'query ($id: ID!) { call(id: $id) { cacheEntry { createdBy { id } servedCalls { totalCount } } } }', variables: { id } }),
      });
      return ((await response.json()) as { data: { call: { cacheEntry: { createdBy: { id: string }; servedCalls: { totalCount: number } } | null } } }).data.call.cacheEntry;
    };
    expect(await entryOf(hit.call.id)).toEqual({ createdBy: { id: miss.call.id }, servedCalls: { totalCount: 1 } });

    const refreshed = await testApp.services.llm.sendMessage({ messages: user('link me'), cache: 'REFRESH' });
    await testApp.services.history.flush();
    // The entry that served the hit is gone; the new one has served nobody yet.
    expect(await entryOf(hit.call.id)).toBeNull();
    expect(await entryOf(refreshed.call.id)).toEqual({ createdBy: { id: refreshed.call.id }, servedCalls: { totalCount: 0 } });
  });

  it('records the upstream attempts and cost of a shared request whose first caller gave up, and the others still get the answer', async () => {
    numbered(300);
    const leaving = new AbortController();
    const leader = testApp.services.llm.sendMessage({ messages: user('share me'), cache: 'USE', signal: leaving.signal });
    await waitUntil(() => fake.requestsTo('chat').length === 1);
    const follower = testApp.services.llm.sendMessage({ messages: user('share me'), cache: 'USE' });
    leaving.abort();
    const leaderError = await leader.then(
      () => null,
      (error: unknown) => error as { code: string; details: { callId: string } },
    );
    expect(leaderError?.code).toBe('ABORTED');
    expect((await follower).cacheStatus).toBe('HIT');
    expect(fake.requestsTo('chat')).toHaveLength(1);
    await waitUntil(async () => {
      await testApp.services.history.flush();
      const [row] = await testApp.testDatabase.database.query<{ attemptCount: number }>('SELECT "attemptCount" FROM "LlmCall" WHERE "id" = $1', [leaderError!.details.callId]);
      return row !== undefined;
    });
    const [row] = await testApp.testDatabase.database.query<{ status: string; errorCode: string; attemptCount: number; costUsd: string | null; attempts: number }>(
      `SELECT c."status"::text AS "status", c."errorCode", c."attemptCount", c."costUsd", (SELECT count(*)::int FROM "LlmAttempt" a WHERE a."callId" = c."id") AS "attempts"
       FROM "LlmCall" c WHERE c."id" = $1`,
      [leaderError!.details.callId],
    );
    expect(row).toMatchObject({ status: 'ERROR', errorCode: 'ABORTED', attemptCount: 1, attempts: 1 });
    expect(compareUsd(usdOrNull(row!.costUsd)!, '0')).toBe(1);
  });
});
