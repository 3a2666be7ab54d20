import type { GraphQLFormattedError } from 'graphql';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import type { Database } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices } from '../../src/services.ts';
import { paidFieldNames } from '../../src/graphql/paid-fields.ts';
import { schema } from '../../src/graphql/schema.ts';
import { createTestApp, testConfig, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

// These queries are generated (thousands of levels, tens of aliases): plain strings, not codegen documents.

interface RawResponse extends GraphQLResponse<Record<string, unknown>> {
  status: number;
}

async function post(testApp: TestApp, query: string, variables?: Record<string, unknown>): Promise<RawResponse> {
  const response = await testApp.app.fetch('http://callboard/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, ...((await response.json()) as GraphQLResponse<Record<string, unknown>>) };
}

/** The response holds exactly one error, with that code, and nothing ran (no data). */
function refused(response: RawResponse, code: string): GraphQLFormattedError {
  expect(response.status, JSON.stringify(response).slice(0, 500)).not.toBe(500);
  expect(response.errors, JSON.stringify(response).slice(0, 500)).toHaveLength(1);
  expect(response.errors![0]!.extensions?.code).toBe(code);
  expect(response.data ?? null).toBeNull();
  return response.errors![0]!;
}

const send = (alias: string) => `${alias}: sendMessage(input: { messages: [{ role: USER, content: "${alias}" }] }) { message { content } }`;

/** A valid query `levels` fields deep: a call's cache entry, its creating call, its entry... */
function nestedCalls(levels: number): string {
  // calls, edges and node are the first three levels; below them cacheEntry and createdBy alternate.
  let selection = levels - 1 >= 4 && (levels - 1) % 2 === 0 ? 'key' : 'id';
  for (let depth = levels - 1; depth >= 4; depth--) selection = `${depth % 2 === 0 ? 'cacheEntry' : 'createdBy'} { ${selection} }`;
  return `{ calls { edges { node { ${selection} } } } }`;
}

/** The 919,200-node query measured before limits existed: three pages of 100 nested in one another. */
const nestedPages = `{ calls(first: 100) { edges { node { id model latencyMs cacheEntry { key servedCalls(first: 100) { edges { node { id cacheEntry { key
  servedCalls(first: 100) { edges { node { id model latencyMs requestBody responseBody } } } } } } } } } } } }`;

describe.each(databaseKinds)('query limits, on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let manyAliasesApp: TestApp;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\n`;
    const environment = { OPENAI_API_KEY: 'sk-limits' };
    [testApp, manyAliasesApp] = await Promise.all([
      // A query of a million tokens is a 6 MB body: past MAX_BODY_BYTES, which would refuse it first.
      createTestApp(kind, testConfig(`${ini}[Limits]\nMAX_BODY_BYTES=16777216\n`, environment)),
      // Aliases are refused first otherwise: this one lets 50 paid aliases reach the paid-operations bound.
      createTestApp(kind, testConfig(`${ini}[Limits]\nMAX_ALIASES=100\nMAX_QUERY_COST=2000\n`, environment)),
    ]);
  });

  afterAll(async () => {
    await Promise.all([testApp?.dispose(), manyAliasesApp?.dispose()]);
    await fake?.close();
  });

  beforeEach(() => fake.reset());

  it('refuses a query deeper than MAX_QUERY_DEPTH with QUERY_TOO_DEEP, and serves one at the limit', async () => {
    const error = refused(await post(testApp, nestedCalls(16)), 'QUERY_TOO_DEEP');
    expect(error.extensions?.details).toEqual({ limit: 'MAX_QUERY_DEPTH', max: 15, actual: 16 });
    expect(error.message).toMatch(/MAX_QUERY_DEPTH/);
    const served = await post(testApp, nestedCalls(15));
    expect(served.errors).toBeUndefined();
    expect(served.data).toEqual({ calls: { edges: [] } });
  });

  it.each([10_000, 100_000])('refuses a query %i levels deep with QUERY_TOO_DEEP, not a 500', async (levels) => {
    const query = `{${'calls {'.repeat(levels)} id ${'}'.repeat(levels)}}`;
    const error = refused(await post(testApp, query), 'QUERY_TOO_DEEP');
    expect(error.message).toMatch(/levels deep/);
  });

  it('refuses deeply nested argument values and list types while parsing', async () => {
    refused(await post(testApp, `{ tokenCount(model: "gpt-4o", text: ${'['.repeat(5_000)}"a"${']'.repeat(5_000)}) { tokens } }`), 'QUERY_TOO_DEEP');
    refused(await post(testApp, `query ($a: ${'['.repeat(5_000)}Int${']'.repeat(5_000)}) { providers { apiType } }`), 'QUERY_TOO_DEEP');
  });

  it('stops reading a query of a million tokens at MAX_QUERY_TOKENS with QUERY_TOO_LARGE', async () => {
    const error = refused(await post(testApp, `{ ${'providers { apiType } '.repeat(250_000)}}`), 'QUERY_TOO_LARGE');
    expect(error.extensions?.details).toEqual({ limit: 'MAX_QUERY_TOKENS', max: 5000 });
  });

  it('refuses more aliases than MAX_ALIASES with TOO_MANY_ALIASES, and serves as many as allowed', async () => {
    const aliases = (count: number) => `{ ${Array.from({ length: count }, (_, index) => `a${index}: providers { apiType }`).join(' ')} }`;
    const error = refused(await post(testApp, aliases(31)), 'TOO_MANY_ALIASES');
    expect(error.extensions?.details).toEqual({ limit: 'MAX_ALIASES', max: 30, actual: 31 });
    const served = await post(testApp, aliases(30));
    expect(served.errors).toBeUndefined();
    expect(Object.keys(served.data!)).toHaveLength(30);
  });

  it('refuses more directives than MAX_DIRECTIVES with TOO_MANY_DIRECTIVES', async () => {
    const error = refused(await post(testApp, `{ providers { ${'apiType @include(if: true) '.repeat(51)}} }`), 'TOO_MANY_DIRECTIVES');
    expect(error.extensions?.details).toMatchObject({ limit: 'MAX_DIRECTIVES', max: 50 });
  });

  it('refuses the 919,200-node query by its cost before anything runs', async () => {
    const error = refused(await post(testApp, nestedPages), 'QUERY_TOO_COMPLEX');
    const details = error.extensions?.details as { limit: string; max: number; actual: number };
    expect(details).toMatchObject({ limit: 'MAX_QUERY_COST', max: 50_000 });
    // Each page multiplies what it holds: 100 x 100 x 100 rows of the innermost page alone.
    expect(details.actual).toBeGreaterThan(1_000_000);
  });

  it('prices a page by its `first` from the variables, each request anew (no cached verdict)', async () => {
    const query = `query Pages($first: Int) { calls(first: $first) { edges { node { id cacheEntry { servedCalls(first: $first) {
      edges { node { id model latencyMs status } } } } } } } }`;
    // Pages of 10 cost about 10 x 10 x 6 = 600; pages of 100 about 100 x 100 x 6 = 60,000.
    expect((await post(testApp, query, { first: 10 })).errors).toBeUndefined();
    const error = refused(await post(testApp, query, { first: 100 }), 'QUERY_TOO_COMPLEX');
    expect((error.extensions?.details as { actual: number }).actual).toBeGreaterThan(50_000);
    expect((await post(testApp, query, { first: 10 })).errors).toBeUndefined();
  });

  it('declares exactly the five fields that call a model as paid', () => {
    expect(paidFieldNames(schema).sort()).toEqual(['Mutation.sendMessage', 'Mutation.sendTemplatedMessage', 'Query.embedding', 'Query.embeddings', 'Subscription.sendMessageStream']);
  });

  it('refuses 50 aliased sendMessage and calls the provider 0 times', async () => {
    const mutation = `mutation { ${Array.from({ length: 50 }, (_, index) => send(`m${index}`)).join(' ')} }`;
    // With the default limits the aliases alone refuse it.
    refused(await post(testApp, mutation), 'TOO_MANY_ALIASES');
    const error = refused(await post(manyAliasesApp, mutation), 'TOO_MANY_PAID_OPERATIONS');
    expect(error.extensions?.details).toEqual({ limit: 'MAX_PAID_OPERATIONS', max: 5, actual: 50 });
    await testApp.services.history.flush();
    expect(fake.requests).toHaveLength(0);
  });

  it('counts paid fields through fragments and inline fragments, and embeddings in a query', async () => {
    const mutation = `mutation { ...Two ... on Mutation { ${send('c')} ${send('d')} } ${send('e')} ${send('f')} }
      fragment Two on Mutation { ${send('a')} ${send('b')} }`;
    const error = refused(await post(testApp, mutation), 'TOO_MANY_PAID_OPERATIONS');
    expect(error.extensions?.details).toMatchObject({ actual: 6 });
    const query = `{ ${Array.from({ length: 6 }, (_, index) => `e${index}: embedding(text: "t${index}") { dimensions }`).join(' ')} }`;
    refused(await post(testApp, query), 'TOO_MANY_PAID_OPERATIONS');
    expect(fake.requests).toHaveLength(0);
  });

  it('runs MAX_PAID_OPERATIONS paid fields in one request, and counts a repeated response key once', async () => {
    const mutation = `mutation { ${['a', 'b', 'c', 'd', 'e'].map(send).join(' ')} ${send('a')} }`;
    const response = await post(testApp, mutation);
    expect(response.errors).toBeUndefined();
    expect(Object.keys(response.data!).sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(fake.requestsTo('chat')).toHaveLength(5);
  });

  it('counts only the operation that runs when a document holds several', async () => {
    const document = `mutation First { ${['a', 'b', 'c'].map(send).join(' ')} } mutation Second { ${['d', 'e', 'f'].map(send).join(' ')} }`;
    const response = await testApp.app.fetch('http://callboard/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: document, operationName: 'Second' }),
    });
    const body = (await response.json()) as GraphQLResponse<Record<string, unknown>>;
    expect(body.errors).toBeUndefined();
    expect(Object.keys(body.data!).sort()).toEqual(['d', 'e', 'f']);
    expect(fake.requestsTo('chat')).toHaveLength(3);
  });
});

/** `count` cache entries, each made by a call (with one attempt) and serving two hits. */
async function seedEntries(database: Database, from: number, to: number): Promise<void> {
  const id = (group: string, number: string) => `('0000000' || ${group} || '-0000-7000-8000-' || lpad(${number}::text, 12, '0'))::uuid`;
  await database.query(
    `INSERT INTO "CacheEntry" ("key", "keyVersion", "kind", "apiType", "model", "request", "response", "createdByCallId")
     SELECT 'key-' || g, 1, 'CHAT', 'openai', 'gpt-4o-mini', '{}'::jsonb, '{}'::jsonb, ${id('0', 'g')} FROM generate_series($1::int, $2::int) g`,
    [from, to],
  );
  await database.query(
    `INSERT INTO "LlmCall" ("id", "createdAt", "kind", "apiType", "model", "status", "cacheStatus", "cacheKey", "servedByCallId", "latencyMs", "attemptCount")
     SELECT ${id('h', 'g')}, now() - (g * 3 + h) * interval '1 second', 'CHAT', 'openai', 'gpt-4o-mini', 'SUCCESS',
       (CASE WHEN h = 0 THEN 'MISS' ELSE 'HIT' END)::"CacheStatus", 'key-' || g, CASE WHEN h = 0 THEN NULL ELSE ${id('0', 'g')} END,
       1.5, CASE WHEN h = 0 THEN 1 ELSE 0 END
     FROM generate_series($1::int, $2::int) g, generate_series(0, 2) h`,
    [from, to],
  );
  await database.query(
    `INSERT INTO "LlmAttempt" ("id", "callId", "number", "startedAt", "latencyMs", "httpStatus")
     SELECT gen_random_uuid(), ${id('0', 'g')}, 1, now(), 1.2, 200 FROM generate_series($1::int, $2::int) g`,
    [from, to],
  );
}

const nestedHistory = `{ calls(first: 100) { edges { node { id cacheStatus attempts { number } cacheEntry { key createdBy { id attempts { number } }
  servedCalls(first: 5) { totalCount edges { node { id cacheEntry { key } } } } } } } } }`;

interface NestedHistory {
  calls: {
    edges: {
      node: {
        id: string;
        cacheStatus: string;
        attempts: { number: number }[];
        cacheEntry: { key: string; createdBy: { id: string; attempts: { number: number }[] }; servedCalls: { totalCount: number; edges: { node: { id: string; cacheEntry: { key: string } } }[] } };
      };
    }[];
  };
}

describe.each(databaseKinds)('lists under lists load in batches, on %s', (kind) => {
  let testDatabase: TestDatabase;
  let testApp: Pick<TestApp, 'app'>;
  let dispose: () => Promise<void>;
  const readSql: string[] = [];

  beforeAll(async () => {
    testDatabase = await createTestDatabase(kind);
    const database = testDatabase.database;
    // Every read of the history and the cache goes through analyticsQuery: count them.
    const counted: Database = {
      ...database,
      analyticsQuery: (sql, parameters) => {
        readSql.push(sql);
        return database.analyticsQuery(sql, parameters);
      },
    };
    const services = await createServices({ loaded: testConfig(), database: counted, logger: createLogger('silent') });
    const app = createApp(services);
    testApp = { app };
    dispose = async () => {
      await app.dispose();
      await services.close();
      await testDatabase.dispose();
    };
  });

  afterAll(async () => dispose?.());

  async function nestedQuery(): Promise<{ data: NestedHistory; queries: number }> {
    readSql.length = 0;
    const response = await post(testApp as TestApp, nestedHistory);
    expect(response.errors).toBeUndefined();
    return { data: response.data as unknown as NestedHistory, queries: readSql.length };
  }

  it('reads a page of calls with their attempts, entries, creators and served calls in as many queries for 12 rows as for 36', async () => {
    await seedEntries(testDatabase.database, 1, 4);
    const small = await nestedQuery();
    expect(small.data.calls.edges).toHaveLength(12);
    await seedEntries(testDatabase.database, 5, 12);
    const large = await nestedQuery();
    expect(large.data.calls.edges).toHaveLength(36);
    expect(large.queries).toBe(small.queries);
    expect(large.queries).toBeLessThanOrEqual(8);

    // And every row got its own data, not a neighbour's.
    for (const { node } of large.data.calls.edges) {
      const number = Number(node.cacheEntry.key.slice('key-'.length));
      const creator = `00000000-0000-7000-8000-${String(number).padStart(12, '0')}`;
      expect(node.cacheEntry.createdBy).toEqual({ id: creator, attempts: [{ number: 1 }] });
      expect(node.attempts).toHaveLength(node.cacheStatus === 'MISS' ? 1 : 0);
      expect(node.cacheEntry.servedCalls.totalCount).toBe(2);
      const served = node.cacheEntry.servedCalls.edges.map((edge) => edge.node);
      expect(served.map((call) => call.id)).toEqual([1, 2].map((hit) => `0000000${hit}-0000-7000-8000-${String(number).padStart(12, '0')}`));
      expect(served.every((call) => call.cacheEntry.key === node.cacheEntry.key)).toBe(true);
    }
  });

  it('refuses the 919,200-node query without a single read', async () => {
    readSql.length = 0;
    refused(await post(testApp as TestApp, nestedPages), 'QUERY_TOO_COMPLEX');
    expect(readSql).toEqual([]);
  });

  it('pages the served calls of each entry with first and after', async () => {
    const query = (after: string | null) =>
      `{ cacheEntries(first: 3, orderBy: { field: CREATED_AT, direction: ASC }) { edges { node { key servedCalls(first: 1${after ? `, after: "${after}"` : ''}) {
        edges { node { id } } pageInfo { hasNextPage endCursor } } } } } }`;
    const first = await post(testApp as TestApp, query(null));
    expect(first.errors).toBeUndefined();
    type Entries = { cacheEntries: { edges: { node: { key: string; servedCalls: { edges: { node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } } }[] } };
    const entries = (first.data as unknown as Entries).cacheEntries.edges.map((edge) => edge.node);
    expect(entries).toHaveLength(3);
    for (const entry of entries) {
      expect(entry.servedCalls.edges).toHaveLength(1);
      expect(entry.servedCalls.pageInfo.hasNextPage).toBe(true);
    }
    // The cursor of one entry's page, used for another entry, still pages by (createdAt, id).
    const second = await post(testApp as TestApp, query(entries[0]!.servedCalls.pageInfo.endCursor));
    const next = (second.data as unknown as Entries).cacheEntries.edges[0]!.node.servedCalls;
    expect(next.edges.map((edge) => edge.node.id)).toEqual([`00000002-0000-7000-8000-${entries[0]!.key.slice(4).padStart(12, '0')}`]);
    expect(next.pageInfo.hasNextPage).toBe(false);
  });
});

describe('[Limits] configuration', () => {
  it('has the documented defaults and reads each key', () => {
    expect(testConfig().config.limits).toEqual({
      maxQueryDepth: 15,
      maxAliases: 30,
      maxQueryTokens: 5000,
      maxQueryCost: 50_000,
      maxDirectives: 50,
      maxPaidOperations: 5,
      analyticsStatementTimeoutMs: 15_000,
      maxBodyBytes: 4 * 1024 * 1024,
      maxMessages: 1000,
      maxCharactersPerCall: 1_000_000,
      maxMetadataDepth: 20,
      maxMetadataBytes: 65_536,
      maxTags: 20,
      maxTagLength: 200,
      maxSubscriptions: 100,
    });
    expect(testConfig('', { CALLBOARD_LIMITS__MAX_SUBSCRIPTIONS: '0' }).config.limits.maxSubscriptions).toBe(0);
    expect(testConfig('', { CALLBOARD_LIMITS__MAX_PAID_OPERATIONS: '0' }).config.limits.maxPaidOperations).toBe(0);
    expect(() => testConfig('[Limits]\nMAX_QUERY_DEPTH=100000\n')).toThrow(/MAX_QUERY_DEPTH/);
  });
});
