import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services } from '../../src/services.ts';
import { testConfig } from '../support/app.ts';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../support/database.ts';
import { defaultChatResponse, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, type Listening } from '../support/http.ts';
import { subscribe } from '../support/sse.ts';

const masterKey = 'cb-reqlog-master-SECRET';
const upstreamKey = 'sk-reqlog-upstream-SECRET';

interface RequestLine {
  level: number;
  time: string;
  msg: string;
  reqId: string;
  method: string;
  path: string;
  status: number;
  operation: string | null;
  errorCodes?: string[];
  caller: { kind: string; keyId?: string; label: string } | null;
  tenant: string | null;
  calls: { callId: string; kind: string; model: string; cacheStatus: string; status: string; errorCode: string | null; attempts: (number | string | null)[] }[];
  durationMs: number;
}

const sendMessage = `mutation ($input: SendMessageInput!) { sendMessage(input: $input) { message { content } cacheStatus call { id } } }`;

describe.each(databaseKinds)('request log lines and x-request-id on %s, over HTTP', (kind) => {
  let fake: FakeOpenAI;
  let testDatabase: TestDatabase;
  let services: Services;
  let app: App;
  let server: Listening;
  /** Every line the logger wrote, as text (secrets are looked for in it) and parsed. */
  const written: string[] = [];
  const lines = () => written.map((text) => JSON.parse(text) as RequestLine);
  let memberKey: { key: string; id: string; prefix: string };

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    testDatabase = await createTestDatabase(kind);
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\nCACHE_API_CALLS=True\nMAX_ATTEMPTS=3\nWAITING_TIME=0.01\n`;
    const logger = createLogger('debug', { write: (text: string) => void written.push(text) });
    services = await createServices({ loaded: testConfig(ini, { OPENAI_API_KEY: upstreamKey, CALLBOARD_MASTER_KEY: masterKey }), database: testDatabase.database, logger });
    app = createApp(services);
    server = await listen(app);
    const created = await services.keys.create({ name: 'log test app', role: 'MEMBER', tenant: 'team-logs' }, 'test');
    memberKey = { key: created.key, id: created.record.id, prefix: created.record.prefix };
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await app?.dispose();
    await services?.close();
    await testDatabase?.dispose();
    await fake?.close();
  });

  beforeEach(() => {
    fake.reset();
    written.length = 0;
  });

  async function graphql(query: string, variables: Record<string, unknown>, headers: Record<string, string> = {}) {
    const response = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${masterKey}`, ...headers },
      body: JSON.stringify({ query, variables }),
    });
    return { response, body: (await response.json()) as { data?: any; errors?: { message: string }[] } };
  }

  /** The request line of this request id, once written (after the answer was sent). */
  async function lineOf(reqId: string): Promise<RequestLine> {
    await expect.poll(() => lines().filter((line) => line.msg === 'request' && line.reqId === reqId).length).toBe(1);
    return lines().find((line) => line.msg === 'request' && line.reqId === reqId)!;
  }

  it('echoes a sane x-request-id, and makes one when it is missing or hostile', async () => {
    const given = await graphql('{ __typename }', {}, { 'x-request-id': 'trace-42.abc:DEF_9-x' });
    expect(given.response.headers.get('x-request-id')).toBe('trace-42.abc:DEF_9-x');

    const ids = new Set<string>();
    for (const hostile of [undefined, 'x'.repeat(129), 'has space', 'semi;colon', 'new\u00e9line', '']) {
      const { response } = await graphql('{ __typename }', {}, hostile === undefined ? {} : { 'x-request-id': hostile });
      const id = response.headers.get('x-request-id')!;
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      ids.add(id);
      await lineOf(id);
    }
    expect(ids.size).toBe(6);
    const longest = await graphql('{ __typename }', {}, { 'x-request-id': 'y'.repeat(128) });
    expect(longest.response.headers.get('x-request-id')).toBe('y'.repeat(128));

    // Every answer: health, refusals (no key), unknown paths and the REST door's errors too.
    const health = await fetch(`${server.url}/health`, { headers: { 'x-request-id': 'probe-1' } });
    expect(health.headers.get('x-request-id')).toBe('probe-1');
    expect((await lineOf('probe-1')).level).toBe(20);
    const refused = await fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'no-key-1' }, body: '{"query":"{__typename}"}' });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('x-request-id')).toBe('no-key-1');
    expect(await lineOf('no-key-1')).toMatchObject({ status: 401, caller: null, tenant: null, calls: [] });
    const missing = await fetch(`${server.url}/v1/nothing`, { headers: { authorization: `Bearer ${masterKey}`, 'x-request-id': 'door-404' } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get('x-request-id')).toBe('door-404');
  });

  it('writes one line per request: a miss, then a hit of the same call', async () => {
    const input = { messages: [{ role: 'USER', content: 'log me' }] };
    const miss = await graphql(sendMessage, { input }, { 'x-request-id': 'miss-1' });
    expect(miss.body.data.sendMessage.cacheStatus).toBe('MISS');
    const line = await lineOf('miss-1');
    expect(line).toMatchObject({
      level: 30,
      msg: 'request',
      method: 'POST',
      path: '/graphql',
      status: 200,
      operation: 'mutation sendMessage',
      caller: { kind: 'master', label: 'master key' },
      tenant: 'default',
      calls: [{ callId: miss.body.data.sendMessage.call.id, kind: 'CHAT', model: 'gpt-4o-mini', cacheStatus: 'MISS', status: 'SUCCESS', errorCode: null, attempts: [200] }],
    });
    expect(line.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(line.durationMs).toBeGreaterThan(0);

    const hit = await graphql(`mutation Again($input: SendMessageInput!) { sendMessage(input: $input) { cacheStatus call { id } } }`, { input }, { 'x-request-id': 'hit-1' });
    expect(hit.body.data.sendMessage.cacheStatus).toBe('HIT');
    expect(await lineOf('hit-1')).toMatchObject({
      operation: 'mutation Again',
      calls: [{ callId: hit.body.data.sendMessage.call.id, cacheStatus: 'HIT', status: 'SUCCESS', attempts: [] }],
    });
    expect(written.filter((text) => text.includes('"msg":"request"'))).toHaveLength(2);
  });

  it('writes a subscription\'s line when its stream ends, with its call', async () => {
    const stream = await subscribe(
      fetch,
      `${server.url}/graphql`,
      { query: 'subscription { sendMessageStream(input: { messages: [{ role: USER, content: "stream me" }] }) { result { call { id } } } }' },
      { authorization: `Bearer ${masterKey}`, 'x-request-id': 'subscribed-1' },
    );
    let callId: string | undefined;
    for (let event = await stream.next(); event; event = await stream.next()) callId ??= event.data?.sendMessageStream?.result?.call.id;
    expect(callId).toBeTruthy();
    expect(await lineOf('subscribed-1')).toMatchObject({ operation: 'subscription sendMessageStream', calls: [{ callId, status: 'SUCCESS', attempts: [200] }] });
  });

  it('lists each attempt of a retried call with its upstream status, and a failed call with its error code', async () => {
    // The first attempt gets a 500, the retry an answer.
    fake.script('chat', (request) => (request.callNumber === 1 ? { error: { status: 500, message: 'upstream broke' } } : defaultChatResponse(request)));
    const retried = await graphql(sendMessage, { input: { messages: [{ role: 'USER', content: 'retry me' }], cache: 'BYPASS' } }, { 'x-request-id': 'retried-1' });
    expect(retried.body.errors).toBeUndefined();
    // The same document again (parsed and validated from the cache this time) is still named.
    expect((await lineOf('retried-1')).operation).toBe('mutation sendMessage');
    expect((await lineOf('retried-1')).calls).toEqual([expect.objectContaining({ cacheStatus: 'BYPASS', status: 'SUCCESS', attempts: [500, 200] })]);

    fake.reset();
    fake.script('chat', { error: { status: 400, message: 'bad request upstream' } });
    const failed = await graphql(sendMessage, { input: { messages: [{ role: 'USER', content: 'fail me' }], cache: 'BYPASS' } }, { 'x-request-id': 'failed-1' });
    expect(failed.body.errors).toHaveLength(1);
    const failedLine = await lineOf('failed-1');
    expect(failedLine.calls).toEqual([expect.objectContaining({ status: 'ERROR', errorCode: expect.any(String), attempts: [400] })]);
    // The GraphQL error the caller got, by its code: the HTTP status of a GraphQL answer says nothing of it.
    expect(failedLine).toMatchObject({ status: 200, errorCodes: [(failed.body.errors![0] as unknown as { extensions: { code: string } }).extensions.code] });

    const invalid = await graphql('query Broken { nope }', {}, { 'x-request-id': 'invalid-1' });
    expect(await lineOf('invalid-1')).toMatchObject({ status: invalid.response.status, operation: 'query Broken', errorCodes: ['GRAPHQL_VALIDATION_FAILED'], calls: [] });
  });

  it('writes the REST door line with its route as operation and the key (never the secret) as caller', async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: memberKey.key, maxRetries: 0, defaultHeaders: { 'x-request-id': 'door-1' } });
    const { data: completion, response } = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'through the door' }] }).withResponse();
    expect(response.headers.get('x-request-id')).toBe('door-1');
    const line = await lineOf('door-1');
    expect(line).toMatchObject({
      method: 'POST',
      path: '/v1/chat/completions',
      status: 200,
      operation: 'POST /v1/chat/completions',
      caller: { kind: 'key', keyId: memberKey.id },
      tenant: 'team-logs',
      calls: [{ callId: response.headers.get('x-callboard-call-id'), kind: 'CHAT', cacheStatus: 'MISS', status: 'SUCCESS', attempts: [200] }],
    });
    expect(line.caller!.label).toContain('log test app');
    expect(completion.choices[0]!.message.content).toBeTruthy();

    const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'streamed through the door' }], stream: true }, { headers: { 'x-request-id': 'door-stream' } });
    for await (const _chunk of stream) void _chunk;
    // A streamed answer's line is written once the stream is sent: its call is finished by then.
    expect((await lineOf('door-stream')).calls).toEqual([expect.objectContaining({ status: 'SUCCESS', attempts: [200] })]);

    const embedded = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] }, { headers: { 'x-request-id': 'door-embed' } });
    expect(embedded.data).toHaveLength(2);
    expect(await lineOf('door-embed')).toMatchObject({ operation: 'POST /v1/embeddings', calls: [{ kind: 'EMBEDDING', attempts: [200] }] });

    // No secret in any line: neither the caller's key, the master key, nor the upstream key.
    const all = written.join('\n');
    for (const secret of [memberKey.key, masterKey, upstreamKey]) expect(all).not.toContain(secret);
  });
});
