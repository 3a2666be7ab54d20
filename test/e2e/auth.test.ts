import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { createDatabase } from '../../src/db/database.ts';
import { schema } from '../../src/graphql/schema.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices } from '../../src/services.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { subscribe } from '../support/sse.ts';

const masterKey = 'cb-master-SECRET-for-tests-0001';
const openaiKey = 'sk-auth-SECRET-42';

type Role = 'ADMIN' | 'MEMBER' | 'VIEWER';
interface Response {
  status: number;
  body: { data?: Record<string, unknown> | null; errors?: { message: string; extensions?: { code?: string; details?: Record<string, unknown> } }[] };
}

async function post(testApp: TestApp, query: string, variables: Record<string, unknown> = {}, key?: string | null, headers: Record<string, string> = {}): Promise<Response> {
  const response = await testApp.app.fetch('http://localhost/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, body: (await response.json()) as Response['body'] };
}

const codes = (response: Response) => (response.body.errors ?? []).map((error) => error.extensions?.code);

/** Every root field, with an operation that reaches it and the least role that may run it. */
const operations: { field: string; role: Role; query: string; variables?: (ids: Ids) => Record<string, unknown> }[] = [
  { field: 'Query.tokenCount', role: 'MEMBER', query: '{ tokenCount(text: "hello") { tokens } }' },
  { field: 'Query.embedding', role: 'MEMBER', query: '{ embedding(text: "hello", cache: BYPASS) { dimensions } }' },
  { field: 'Query.embeddings', role: 'MEMBER', query: '{ embeddings(texts: ["a", "b"], cache: BYPASS) { dimensions } }' },
  { field: 'Query.calls', role: 'VIEWER', query: '{ calls(first: 1) { totalCount } }' },
  { field: 'Query.call', role: 'VIEWER', query: 'query ($id: ID!) { call(id: $id) { id } }', variables: (ids) => ({ id: ids.callId }) },
  { field: 'Query.callStats', role: 'VIEWER', query: '{ callStats(groupBy: [MODEL]) { calls } }' },
  { field: 'Query.cacheEntries', role: 'MEMBER', query: '{ cacheEntries(first: 1) { totalCount } }' },
  { field: 'Query.cacheEntry', role: 'MEMBER', query: '{ cacheEntry(key: "nope") { key } }' },
  { field: 'Query.providers', role: 'VIEWER', query: '{ providers { apiType active configured } }' },
  { field: 'Query.settings', role: 'ADMIN', query: '{ settings { key value } }' },
  { field: 'Query.overrides', role: 'ADMIN', query: '{ overrides { key } }' },
  { field: 'Query.overrideChanges', role: 'ADMIN', query: '{ overrideChanges { key } }' },
  { field: 'Query.me', role: 'VIEWER', query: '{ me { id } }' },
  { field: 'Query.apiKeys', role: 'ADMIN', query: '{ apiKeys(first: 5) { edges { node { id } } } }' },
  {
    field: 'Mutation.sendMessage',
    role: 'MEMBER',
    query: 'mutation { sendMessage(input: { messages: [{ role: USER, content: "hi" }], cache: BYPASS }) { message { content } } }',
  },
  {
    field: 'Mutation.sendTemplatedMessage',
    role: 'MEMBER',
    query: 'mutation { sendTemplatedMessage(input: { systemPrompt: "be brief", userPrompt: "hi", cache: BYPASS }) { message { content } } }',
  },
  { field: 'Mutation.invalidateCache', role: 'ADMIN', query: 'mutation { invalidateCache(dryRun: true) { matched } }' },
  { field: 'Mutation.forceApiType', role: 'ADMIN', query: 'mutation { forceApiType(apiType: "openai") { key } }' },
  { field: 'Mutation.forceApiCache', role: 'ADMIN', query: 'mutation { forceApiCache(enabled: false) { key } }' },
  { field: 'Mutation.forceDefaultValue', role: 'ADMIN', query: 'mutation { forceDefaultValue(key: "MODEL", value: "gpt-4o-mini") { key } }' },
  { field: 'Mutation.resetOverrides', role: 'ADMIN', query: 'mutation { resetOverrides { key } }' },
  {
    field: 'Mutation.createApiKey',
    role: 'ADMIN',
    query: 'mutation { createApiKey(input: { name: "made in the matrix", role: VIEWER, tenant: "matrix" }) { apiKey { id } } }',
  },
  {
    field: 'Mutation.updateApiKey',
    role: 'ADMIN',
    query: 'mutation ($id: ID!) { updateApiKey(id: $id, input: { name: "renamed" }) { id } }',
    variables: (ids) => ({ id: ids.spareKeyId }),
  },
  { field: 'Mutation.revokeApiKey', role: 'ADMIN', query: 'mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', variables: (ids) => ({ id: ids.spareKeyId }) },
  { field: 'Subscription.callEvents', role: 'VIEWER', query: 'subscription { callEvents { call { id tenant } } }' },
  {
    field: 'Subscription.sendMessageStream',
    role: 'MEMBER',
    query: 'subscription { sendMessageStream(input: { messages: [{ role: USER, content: "stream hi" }], cache: BYPASS }) { delta { content } result { cacheStatus } } }',
  },
];

interface Ids {
  callId: string;
  spareKeyId: string;
}

const rank: Record<Role, number> = { VIEWER: 0, MEMBER: 1, ADMIN: 2 };

const CreateKey = `mutation ($input: CreateApiKeyInput!) { createApiKey(input: $input) { key apiKey { id prefix role tenant } } }`;

describe.each(databaseKinds)('keys, roles and tenants on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  const keys = {} as Record<'admin' | 'memberA' | 'viewerA' | 'memberB', { key: string; id: string }>;

  async function createKey(name: string, role: Role, tenant: string, extra: Record<string, unknown> = {}) {
    const response = await post(testApp, CreateKey, { input: { name, role, tenant, ...extra } }, masterKey);
    expect(response.body.errors).toBeUndefined();
    const created = response.body.data!.createApiKey as { key: string; apiKey: { id: string; prefix: string } };
    expect(created.key.startsWith(created.apiKey.prefix)).toBe(true);
    return { key: created.key, id: created.apiKey.id };
  }

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    testApp = await createTestApp(kind, testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\n`, { OPENAI_API_KEY: openaiKey, CALLBOARD_MASTER_KEY: masterKey }));
    keys.admin = await createKey('ops', 'ADMIN', 'team-a');
    keys.memberA = await createKey('app a', 'MEMBER', 'team-a');
    keys.viewerA = await createKey('dashboard a', 'VIEWER', 'team-a');
    keys.memberB = await createKey('app b', 'MEMBER', 'team-b');
  });

  afterAll(async () => {
    await testApp?.dispose();
    await fake?.close();
  });

  it('the matrix names every root field of the schema', () => {
    const fields = [
      ...Object.keys(schema.getQueryType()!.getFields()).map((name) => `Query.${name}`),
      ...Object.keys(schema.getMutationType()!.getFields()).map((name) => `Mutation.${name}`),
      ...Object.keys(schema.getSubscriptionType()!.getFields()).map((name) => `Subscription.${name}`),
    ];
    expect(operations.map((operation) => operation.field).sort()).toEqual(fields.sort());
  });

  it('runs each operation for the roles that may, and answers FORBIDDEN naming the role to the others, running nothing', async () => {
    const called = await post(testApp, operations.find((operation) => operation.field === 'Mutation.sendMessage')!.query, {}, keys.memberA.key);
    expect(called.body.errors).toBeUndefined();
    await testApp.services.history.flush();
    const callId = ((await post(testApp, '{ calls(first: 1) { edges { node { id } } } }', {}, keys.memberA.key)).body.data!.calls as { edges: { node: { id: string } }[] }).edges[0]!.node.id;
    const callers: [string, Role, string][] = [
      ['master key', 'ADMIN', masterKey],
      ['ADMIN key', 'ADMIN', keys.admin.key],
      ['MEMBER key', 'MEMBER', keys.memberA.key],
      ['VIEWER key', 'VIEWER', keys.viewerA.key],
    ];
    for (const operation of operations) {
      for (const [name, role, key] of callers) {
        if (operation.field.startsWith('Subscription.')) {
          await expectSubscription(operation, `${operation.field} as ${name}`, rank[role] >= rank[operation.role], role, key);
          continue;
        }
        const spare = await createKey('spare', 'VIEWER', 'team-a');
        const upstreamBefore = fake.requests.length;
        const response = await post(testApp, operation.query, operation.variables?.({ callId, spareKeyId: spare.id }) ?? {}, key);
        const label = `${operation.field} as ${name}`;
        expect(response.status, label).toBe(200);
        if (rank[role] >= rank[operation.role]) {
          expect(codes(response), label).not.toContain('FORBIDDEN');
          expect(response.body.errors, `${label}: ${JSON.stringify(response.body.errors)}`).toBeUndefined();
        } else {
          expect(codes(response), label).toEqual(['FORBIDDEN']);
          expect(response.body.errors![0]!.message, label).toContain(`needs the ${operation.role} role`);
          expect(response.body.errors![0]!.extensions!.details, label).toMatchObject({ requiredRole: operation.role, role });
          expect(fake.requests.length, `${label}: nothing went upstream`).toBe(upstreamBefore);
        }
      }
    }
  });

  /**
   * A subscription over SSE: a role that may gets the next call of tenant team-a (which every caller
   * of the matrix reads), any other the FORBIDDEN result at once, and nothing subscribes.
   */
  async function expectSubscription(operation: (typeof operations)[number], label: string, allowed: boolean, role: Role, key: string) {
    const stream = await subscribe(testApp.app.fetch, 'http://localhost/graphql', { query: operation.query }, { authorization: `Bearer ${key}` });
    try {
      expect(stream.status, label).toBe(200);
      if (allowed && operation.field === 'Subscription.sendMessageStream') {
        const event = await stream.next();
        expect(event?.errors, `${label}: ${JSON.stringify(event?.errors)}`).toBeUndefined();
        expect(event?.data?.sendMessageStream.delta, label).toMatchObject({ content: expect.any(String) });
      } else if (allowed) {
        const sent = await post(testApp, operations.find((candidate) => candidate.field === 'Mutation.sendMessage')!.query, {}, keys.memberA.key);
        expect(sent.body.errors, label).toBeUndefined();
        await testApp.services.history.flush();
        const event = await stream.next();
        expect(event?.errors, `${label}: ${JSON.stringify(event?.errors)}`).toBeUndefined();
        expect(Object.values(event?.data ?? {})[0], label).toMatchObject({ call: { tenant: 'team-a' } });
      } else {
        const upstreamBefore = fake.requests.length;
        const event = await stream.next();
        expect(event?.errors?.map((error) => error.extensions?.code), label).toEqual(['FORBIDDEN']);
        expect(event?.errors![0]!.extensions!.details, label).toMatchObject({ requiredRole: operation.role, role });
        expect(await stream.next(), `${label}: the stream ends`).toBeNull();
        expect(testApp.services.callEvents.size(), `${label}: nothing subscribed`).toBe(0);
        expect(fake.requests.length, `${label}: nothing went upstream`).toBe(upstreamBefore);
      }
    } finally {
      await stream.close();
    }
  }

  it('answers 401 UNAUTHENTICATED without a key, with an unknown, a malformed, a revoked or an expired key; /health and /ready stay open', async () => {
    const revoked = await createKey('to revoke', 'MEMBER', 'team-a');
    expect((await post(testApp, '{ me { id } }', {}, revoked.key)).body.data).toEqual({ me: { id: revoked.id } });
    expect((await post(testApp, 'mutation ($id: ID!) { revokeApiKey(id: $id) { revokedAt } }', { id: revoked.id }, masterKey)).body.errors).toBeUndefined();
    const expiring = await createKey('expiring', 'MEMBER', 'team-a', { expiresAt: new Date(Date.now() + 60_000).toISOString() });
    await testApp.testDatabase.database.query(`UPDATE "ApiKey" SET "expiresAt" = now() - interval '1 second' WHERE "id" = $1`, [expiring.id]);
    testApp.services.keys.forget(expiring.id);

    for (const [label, key, headers] of [
      ['no key', null, {}],
      ['unknown key', 'cb_not-a-real-key', {}],
      ['revoked key', revoked.key, {}],
      ['expired key', expiring.key, {}],
      ['Basic, not Bearer', null, { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
    ] as const) {
      const response = await post(testApp, '{ calls(first: 1) { totalCount } }', {}, key, headers);
      expect(response.status, label).toBe(401);
      expect(codes(response), label).toEqual(['UNAUTHENTICATED']);
    }
    for (const path of ['/health', '/ready']) expect((await testApp.app.fetch(`http://localhost${path}`)).status).toBe(200);
    const graphiql = await testApp.app.fetch('http://localhost/graphql', { headers: { accept: 'text/html' } });
    expect(graphiql.status).toBe(200);
    expect(await graphiql.text()).toContain('<html');
  });

  it('records every call, attempt and cache entry with its tenant and key, and no tenant sees, filters or is served another tenant\'s', async () => {
    const send = 'mutation ($text: String!) { sendMessage(input: { messages: [{ role: USER, content: $text }], cache: USE }) { cacheStatus call { id tenant apiKeyId cacheKey } } }';
    const upstreamBefore = fake.requests.length;
    const a = (await post(testApp, send, { text: 'the same prompt' }, keys.memberA.key)).body.data!.sendMessage as { cacheStatus: string; call: { id: string; tenant: string; apiKeyId: string; cacheKey: string } };
    const b = (await post(testApp, send, { text: 'the same prompt' }, keys.memberB.key)).body.data!.sendMessage as typeof a;
    const aAgain = (await post(testApp, send, { text: 'the same prompt' }, keys.memberA.key)).body.data!.sendMessage as typeof a;
    expect([a.cacheStatus, b.cacheStatus, aAgain.cacheStatus]).toEqual(['MISS', 'MISS', 'HIT']);
    expect(fake.requests.length - upstreamBefore).toBe(2);
    expect(a.call).toMatchObject({ tenant: 'team-a', apiKeyId: keys.memberA.id });
    expect(b.call).toMatchObject({ tenant: 'team-b', apiKeyId: keys.memberB.id });
    expect(a.call.cacheKey).not.toBe(b.call.cacheKey);
    await testApp.services.history.flush();

    const rows = await testApp.testDatabase.database.query<{ tenant: string; apiKeyId: string }>(
      `SELECT a."tenant", a."apiKeyId" FROM "LlmAttempt" a WHERE a."callId" = ANY($1::uuid[]) ORDER BY a."tenant"`,
      [[a.call.id, b.call.id]],
    );
    expect(rows).toEqual([
      { tenant: 'team-a', apiKeyId: keys.memberA.id },
      { tenant: 'team-b', apiKeyId: keys.memberB.id },
    ]);
    const entries = await testApp.testDatabase.database.query<{ tenant: string; apiKeyId: string }>(`SELECT "tenant", "apiKeyId" FROM "CacheEntry" WHERE "key" = ANY($1) ORDER BY "tenant"`, [
      [a.call.cacheKey, b.call.cacheKey],
    ]);
    expect(entries).toEqual([
      { tenant: 'team-a', apiKeyId: keys.memberA.id },
      { tenant: 'team-b', apiKeyId: keys.memberB.id },
    ]);

    const seen = async (key: string) => {
      const response = await post(
        testApp,
        `query ($b: ID!, $bKey: String!) {
          calls(first: 100, filter: { tenants: ["team-b", "team-a"], text: "the same prompt" }) { edges { node { id tenant } } }
          call(id: $b) { id }
          cacheEntry(key: $bKey) { key }
          cacheEntries(first: 100) { edges { node { key } } }
          callStats(groupBy: [TENANT]) { tenant calls }
        }`,
        { b: b.call.id, bKey: b.call.cacheKey },
        key,
      );
      expect(response.body.errors).toBeUndefined();
      return response.body.data as {
        calls: { edges: { node: { id: string; tenant: string } }[] };
        call: { id: string } | null;
        cacheEntry: { key: string } | null;
        cacheEntries: { edges: { node: { key: string } }[] };
        callStats: { tenant: string; calls: number }[];
      };
    };
    const asA = await seen(keys.memberA.key);
    expect(new Set(asA.calls.edges.map((edge) => edge.node.tenant))).toEqual(new Set(['team-a']));
    expect(asA.call).toBeNull();
    expect(asA.cacheEntry).toBeNull();
    expect(asA.cacheEntries.edges.map((edge) => edge.node.key)).not.toContain(b.call.cacheKey);
    expect(asA.callStats.map((bucket) => bucket.tenant)).toEqual(['team-a']);

    const asAdmin = await seen(keys.admin.key);
    expect(new Set(asAdmin.calls.edges.map((edge) => edge.node.tenant))).toEqual(new Set(['team-a', 'team-b']));
    expect(asAdmin.call).toEqual({ id: b.call.id });
    expect(asAdmin.cacheEntry).toEqual({ key: b.call.cacheKey });
    expect(asAdmin.callStats.map((bucket) => bucket.tenant)).toEqual(expect.arrayContaining(['team-a', 'team-b']));
  });

  it('shows a VIEWER no bodies or metadata, and a MEMBER all of its own', async () => {
    const bodies = '{ calls(first: 1) { edges { node { id requestBody responseBody metadata } } } }';
    const asViewer = await post(testApp, bodies, {}, keys.viewerA.key);
    expect(codes(asViewer)).toContain('FORBIDDEN');
    expect(JSON.stringify(asViewer.body.data)).not.toContain('the same prompt');
    const asMember = await post(testApp, bodies, {}, keys.memberA.key);
    expect(asMember.body.errors).toBeUndefined();
    expect(JSON.stringify(asMember.body.data)).toContain('messages');
  });

  it('never lets an override change where requests and the provider key go, and audits changes with the key that made them', async () => {
    for (const key of ['BASE_URL', 'AZURE_API_VERSION', 'AZURE_EMBEDDING_MODEL_API_VERSION']) {
      const response = await post(testApp, 'mutation ($key: String!) { forceDefaultValue(key: $key, value: "http://attacker.example/v1") { key } }', { key }, keys.admin.key);
      expect(codes(response), key).toEqual(['BAD_USER_INPUT']);
      expect(response.body.errors![0]!.message).toContain('only in config.ini or the environment');
    }
    await post(testApp, 'mutation { forceDefaultValue(key: "TEMPERATURE", value: "0.3") { key } }', {}, keys.admin.key, { 'x-callboard-actor': 'alice' });
    const changes = (await post(testApp, '{ overrideChanges(key: "TEMPERATURE") { changedBy } }', {}, masterKey)).body.data!.overrideChanges as { changedBy: string }[];
    expect(changes[0]!.changedBy).toContain(keys.admin.id);
    expect(changes[0]!.changedBy).toContain('(note: alice)');
    await post(testApp, 'mutation { resetOverrides { key } }', {}, masterKey);
    const sent = await post(testApp, 'mutation { sendMessage(input: { messages: [{ role: USER, content: "where to?" }], cache: BYPASS }) { message { content } } }', {}, keys.memberA.key);
    expect(sent.body.errors).toBeUndefined();
    expect(fake.requests.at(-1)!.headers.authorization).toBe(`Bearer ${openaiKey}`);
  });

  it('stops a revoked key on every instance within a second', async () => {
    const url = testApp.testDatabase.url;
    const otherDatabase = url ? await createDatabase({ url, dataDir: 'unused', poolSize: 2 }) : testApp.testDatabase.database;
    const otherServices = await createServices({ loaded: testApp.services.loaded, database: otherDatabase, logger: createLogger('silent') });
    const other = { app: createApp(otherServices) } as TestApp;
    try {
      const key = await createKey('revoked everywhere', 'VIEWER', 'team-a');
      expect((await post(other, '{ me { id } }', {}, key.key)).body.data).toEqual({ me: { id: key.id } });
      const revokedAt = Date.now();
      await post(testApp, 'mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id }, masterKey);
      let status = 200;
      while (status !== 401 && Date.now() - revokedAt < 5000) {
        status = (await post(other, '{ me { id } }', {}, key.key)).status;
        if (status !== 401) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(status).toBe(401);
      expect(Date.now() - revokedAt).toBeLessThan(1000);
    } finally {
      await other.app.dispose();
      await otherServices.close();
      if (otherDatabase !== testApp.testDatabase.database) await otherDatabase.close();
    }
  });

  it('keeps only hashes of keys: no table, and no database dump, holds a key in clear', async () => {
    const created = await createKey('dump check', 'VIEWER', 'team-a');
    const tables = await testApp.testDatabase.database.query<{ row: string }>(
      `SELECT row_to_json(k)::text AS "row" FROM "ApiKey" k UNION ALL SELECT row_to_json(c)::text FROM "ApiKeyChange" c
       UNION ALL SELECT row_to_json(o)::text FROM "OverrideChange" o UNION ALL SELECT row_to_json(b)::text FROM "LlmCallBody" b`,
    );
    const everything = tables.map((table) => table.row).join('\n');
    expect(everything).toContain(created.id);
    for (const secret of [created.key, keys.admin.key, keys.memberA.key, masterKey, openaiKey]) expect(everything).not.toContain(secret);
    if (testApp.testDatabase.url) {
      const dump = execFileSync('pg_dump', [testApp.testDatabase.url], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      expect(dump).toContain(created.id);
      for (const secret of [created.key, keys.admin.key, masterKey, openaiKey]) expect(dump).not.toContain(secret);
    }
  });
});

describe('open mode', () => {
  let testApp: TestApp;
  beforeAll(async () => {
    testApp = await createTestApp('pglite');
  });
  afterAll(async () => {
    await testApp?.dispose();
  });

  it('acts as an ADMIN of tenant "default" without a key, and still refuses a bad key', async () => {
    const response = await post(testApp, '{ settings { key } me { id } }');
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data!.me).toBeNull();
    expect(testApp.services.authenticator.openMode).toBe(true);
    const bad = await post(testApp, '{ me { id } }', {}, 'cb_nope');
    expect(bad.status).toBe(401);
  });
});
