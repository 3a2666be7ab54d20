import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCallEventHub } from '../../src/analytics/call-events.ts';
import { createApp, type App } from '../../src/app.ts';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services } from '../../src/services.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, type Listening } from '../support/http.ts';
import { startServerProcess } from '../support/server-process.ts';
import { subscribe, type EventStream } from '../support/sse.ts';

const masterKey = 'cb-events-master-SECRET';
const maxSubscriptions = 6;

interface CallFields {
  id: string;
  tenant: string;
  status: 'SUCCESS' | 'ERROR';
  cacheStatus: string;
  errorCode: string | null;
  attempts: { number: number; httpStatus: number | null }[];
  requestBody?: { messages: { content: string }[] } | null;
}
type Events = EventStream<{ callEvents: { missed: number; call: CallFields } }>;

const callSelection = 'missed call { id tenant status cacheStatus errorCode attempts { number httpStatus } }';

/** Polls until the condition holds (the server notices a client that went away asynchronously); fails after 5 s. */
async function waitUntil(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.each(databaseKinds)('callEvents on %s: calls made on one instance reach the subscribers of another', (kind) => {
  let fake: FakeOpenAI;
  /** The instance the dashboards subscribe to, over real HTTP. */
  let watched: TestApp;
  let server: Listening;
  /** The instance the calls are made on. */
  let callerDatabase: Database;
  let caller: { services: Services; app: App };
  const keys = {} as Record<'memberA' | 'viewerA' | 'memberB', string>;
  const open: EventStream[] = [];

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n[Limits]\nMAX_SUBSCRIPTIONS=${maxSubscriptions}\n`;
    watched = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-events', CALLBOARD_MASTER_KEY: masterKey }));
    server = await listen(watched.app);
    const url = watched.testDatabase.url;
    // On Postgres the second instance has its own pools and its own LISTEN connection; PGlite is one process's, so it shares it.
    callerDatabase = url ? await createDatabase({ url, dataDir: 'unused', poolSize: 4 }) : watched.testDatabase.database;
    const services = await createServices({ loaded: watched.services.loaded, database: callerDatabase, logger: createLogger('silent') });
    caller = { services, app: createApp(services) };
    const create = async (role: 'MEMBER' | 'VIEWER', tenant: string) => (await watched.services.keys.create({ name: `${role} ${tenant}`, role, tenant }, 'test')).key;
    keys.memberA = await create('MEMBER', 'team-a');
    keys.viewerA = await create('VIEWER', 'team-a');
    keys.memberB = await create('MEMBER', 'team-b');
  });

  afterEach(async () => {
    fake.reset();
    await Promise.all(open.splice(0).map((stream) => stream.close()));
    await waitUntil(() => watched.services.callEvents.size() === 0);
  });

  afterAll(async () => {
    await server?.close();
    await caller?.app.dispose();
    await caller?.services.close();
    if (callerDatabase && callerDatabase !== watched?.testDatabase.database) await callerDatabase.close();
    await watched?.dispose();
    await fake?.close();
  });

  async function watch(query: string, key: string | null, variables: Record<string, unknown> = {}): Promise<Events> {
    const stream = await subscribe(fetch, `${server.url}/graphql`, { query, variables }, key ? { authorization: `Bearer ${key}` } : {});
    open.push(stream);
    return stream as Events;
  }

  /** A chat call on the caller instance, written to the history before it returns. */
  async function call(key: string, content: string, cache: 'USE' | 'BYPASS' = 'BYPASS'): Promise<{ id: string; cacheStatus?: string; code?: string }> {
    const response = await caller.app.fetch('http://callboard/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({
        query: 'mutation ($content: String!, $cache: CacheMode!) { sendMessage(input: { messages: [{ role: USER, content: $content }], cache: $cache }) { cacheStatus call { id } } }',
        variables: { content, cache },
      }),
    });
    const body = (await response.json()) as {
      data?: { sendMessage: { cacheStatus: string; call: { id: string } } } | null;
      errors?: { extensions: { code: string; details: { callId: string } } }[];
    };
    await caller.services.history.flush();
    if (body.errors) return { id: body.errors[0]!.extensions.details.callId, code: body.errors[0]!.extensions.code };
    return { id: body.data!.sendMessage.call.id, cacheStatus: body.data!.sendMessage.cacheStatus };
  }

  it("streams each call of a VIEWER's tenant with its id, status, cache status and attempts, and no other tenant's; an ADMIN gets every tenant's", async () => {
    const viewer = await watch(`subscription { callEvents { ${callSelection} } }`, keys.viewerA);
    const admin = await watch(`subscription { callEvents { ${callSelection} } }`, masterKey);
    expect([viewer.status, admin.status]).toEqual([200, 200]);
    expect(viewer.contentType).toContain('text/event-stream');

    // Tenant B's call is written, and announced, before tenant A's.
    const other = await call(keys.memberB, 'from team b');
    const miss = await call(keys.memberA, 'from team a', 'USE');
    const hit = await call(keys.memberA, 'from team a', 'USE');
    expect([miss.cacheStatus, hit.cacheStatus]).toEqual(['MISS', 'HIT']);

    const first = await viewer.next();
    expect(first?.errors).toBeUndefined();
    expect(first?.data?.callEvents).toEqual({
      missed: 0,
      call: { id: miss.id, tenant: 'team-a', status: 'SUCCESS', cacheStatus: 'MISS', errorCode: null, attempts: [{ number: 1, httpStatus: 200 }] },
    });
    expect((await viewer.next())?.data?.callEvents.call).toMatchObject({ id: hit.id, status: 'SUCCESS', cacheStatus: 'HIT', attempts: [] });

    const seen = [await admin.next(), await admin.next(), await admin.next()].map((event) => event?.data?.callEvents.call);
    expect(seen.map((seenCall) => [seenCall?.id, seenCall?.tenant])).toEqual([
      [other.id, 'team-b'],
      [miss.id, 'team-a'],
      [hit.id, 'team-a'],
    ]);

    // Nothing of tenant B came before or between A's calls; a last call of A's comes next, not B's.
    const last = await call(keys.memberA, 'last of team a');
    expect((await viewer.next())?.data?.callEvents.call.id).toBe(last.id);
  });

  it('applies the filter in the database: a subscriber of failed calls gets only those, with the bodies it may read', async () => {
    const failures = await watch(
      'subscription ($filter: CallFilter) { callEvents(filter: $filter) { missed call { id status errorCode requestBody } } }',
      keys.memberA,
      { filter: { statuses: ['ERROR'] } },
    );
    const texts = await watch('subscription { callEvents(filter: { text: "needle" }) { call { id } } }', keys.memberA);
    await call(keys.memberA, 'this one succeeds');
    fake.script('chat', { error: { status: 400, message: 'Unsupported value', code: 'unsupported_value' } });
    const failed = await call(keys.memberA, 'this one fails with a needle');
    fake.reset();
    expect(failed.code).toBe('PROVIDER_BAD_REQUEST');
    const withNeedle = await call(keys.memberA, 'another needle, answered');

    const event = (await failures.next())?.data?.callEvents;
    expect(event).toMatchObject({ missed: 0, call: { id: failed.id, status: 'ERROR', errorCode: 'PROVIDER_BAD_REQUEST' } });
    expect(event?.call.requestBody?.messages[0]?.content).toBe('this one fails with a needle');
    expect([(await texts.next())?.data?.callEvents.call.id, (await texts.next())?.data?.callEvents.call.id]).toEqual([failed.id, withNeedle.id]);
  });

  it('refuses a request without a key with 401, keeps bodies from a VIEWER, and keeps other tenants out of its filter', async () => {
    const anonymous = await watch(`subscription { callEvents { ${callSelection} } }`, null);
    expect(anonymous.status).toBe(401);
    expect(JSON.parse(anonymous.text!).errors[0].extensions.code).toBe('UNAUTHENTICATED');

    // A VIEWER asking for tenant B's calls gets its own tenant's, as `calls` does; bodies stay closed to it.
    const viewer = await watch('subscription { callEvents(filter: { tenants: ["team-b"] }) { call { id tenant requestBody } } }', keys.viewerA);
    await call(keys.memberB, 'b asks');
    const mine = await call(keys.memberA, 'a asks');
    const event = await viewer.next();
    expect(event?.data?.callEvents.call).toEqual({ id: mine.id, tenant: 'team-a', requestBody: null });
    expect(event?.errors?.map((error) => error.extensions?.code)).toEqual(['FORBIDDEN']);
    expect(event?.errors?.[0]?.message).toContain('needs the MEMBER role');
  });

  it(`serves at most MAX_SUBSCRIPTIONS (${maxSubscriptions}) at once, frees a slot when a client goes away, and bounds the filter`, async () => {
    const streams: Events[] = [];
    for (let index = 0; index < maxSubscriptions; index += 1) streams.push(await watch('subscription { callEvents { call { id } } }', keys.viewerA));
    expect(watched.services.callEvents.size()).toBe(maxSubscriptions);
    const refused = await watch('subscription { callEvents { call { id } } }', keys.viewerA);
    // Refused as a query is: HTTP 200, one result with the coded error, then the end of the stream.
    expect(refused.status).toBe(200);
    const refusal = await refused.next();
    expect(refusal?.errors?.[0]?.extensions).toMatchObject({ code: 'TOO_MANY_SUBSCRIPTIONS', details: { limit: 'MAX_SUBSCRIPTIONS', max: maxSubscriptions } });
    expect(await refused.next()).toBeNull();

    await streams.pop()!.close();
    await waitUntil(() => watched.services.callEvents.size() === maxSubscriptions - 1);
    const admitted = await watch('subscription { callEvents { call { id } } }', keys.viewerA);
    const made = await call(keys.memberA, 'one for everyone');
    expect((await admitted.next())?.data?.callEvents.call.id).toBe(made.id);
    for (const stream of streams) expect((await stream.next())?.data?.callEvents.call.id).toBe(made.id);

    await Promise.all(open.splice(0).map((stream) => stream.close()));
    await waitUntil(() => watched.services.callEvents.size() === 0);
    const huge = await watch('subscription ($filter: CallFilter) { callEvents(filter: $filter) { call { id } } }', keys.viewerA, {
      filter: { models: Array.from({ length: 500 }, (_unused, index) => `model-${index}`) },
    });
    expect(huge.status).toBe(200);
    expect((await huge.next())?.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', details: { field: 'filter', max: 4096 } });
    expect(watched.services.callEvents.size()).toBe(0);
  });

  it('keeps the newest events for a subscriber that does not read, drops the oldest and says how many it missed', async () => {
    // A hub of this instance's own, with a buffer of 3, beside the app's: the same database, the same announcements.
    const hub = await createCallEventHub({ listen: watched.testDatabase.database.listen, query: watched.testDatabase.database.analyticsQuery, logger: createLogger('silent'), maxSubscriptions: 2, bufferEvents: 3 });
    try {
      const slow = hub.subscribe('team-a', null);
      const reader = hub.subscribe('team-a', null);
      // The reader reads as events come; by the time it has the fifth, the hub has handed all five to the slow one too.
      const read = (async () => {
        const events = [];
        for (let index = 0; index < 5; index += 1) events.push((await reader.next()).value);
        return events;
      })();
      const made: string[] = [];
      for (let index = 0; index < 5; index += 1) made.push((await call(keys.memberA, `slow ${index}`)).id);
      expect((await read).map((event) => [event?.call.id, event?.missed])).toEqual(made.map((id) => [id, 0]));
      const kept = [await slow.next(), await slow.next(), await slow.next()].map((result) => [result.value?.call.id, result.value?.missed]);
      expect(kept).toEqual([
        [made[2], 2],
        [made[3], 0],
        [made[4], 0],
      ]);
      const sixth = await call(keys.memberA, 'slow 5');
      expect((await slow.next()).value).toMatchObject({ call: { id: sixth.id }, missed: 0 });
    } finally {
      await hub.close();
    }
  });
});

describe('callEvents when the server stops (npm start)', () => {
  it('completes every open subscription on SIGTERM, so the server stops without waiting out its grace, with exit code 0', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callboard-events-'));
    const server = await startServerProcess({ cwd: dataDir, env: { CALLBOARD_DATABASE__DATA_DIR: join(dataDir, 'data') } });
    let stream: EventStream | undefined;
    try {
      stream = await subscribe(fetch, server.url, { query: 'subscription { callEvents { call { id } } }' });
      expect(stream.status).toBe(200);
      const exitCode = server.stop('SIGTERM');
      expect(await stream.next()).toBeNull();
      // The grace for calls in flight is CALL_DEADLINE + 5 s (305 s): far longer than this test may take.
      expect(await exitCode).toBe(0);
      expect(server.output.join('\n')).toContain('"historyKept":true');
    } finally {
      await stream?.close();
      server.child.kill('SIGKILL');
    }
  });
});
