import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Prisma } from '../../src/db/generated/client.ts';
import { graphql } from '../gql/index.ts';
import type { CallFilter, CallOrder, SendMessageInput } from '../gql/graphql.ts';
import { createTestApp, testConfig, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

const apiKey = 'sk-e2e-SECRET-42';

const SendMessageMutation = graphql(`
  mutation ApiHistorySendMessage($input: SendMessageInput!) {
    sendMessage(input: $input) {
      cacheStatus
      call {
        id
        cacheKey
      }
    }
  }
`);

const EmbeddingQuery = graphql(`
  query ApiHistoryEmbedding($text: String!) {
    embedding(text: $text) {
      call {
        id
      }
    }
  }
`);

const CallsQuery = graphql(`
  query ApiHistoryCalls($first: Int, $after: String, $filter: CallFilter, $orderBy: CallOrder) {
    calls(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
      totalCount
      edges {
        cursor
        node {
          id
          latencyMs
          usage {
            totalTokens
          }
        }
      }
      pageInfo {
        hasNextPage
        hasPreviousPage
        startCursor
        endCursor
      }
    }
  }
`);

const CallQuery = graphql(`
  query ApiHistoryCall($id: ID!) {
    call(id: $id) {
      id
      status
      cacheStatus
      cacheKey
      attemptCount
      attempts {
        number
        httpStatus
        errorCode
        waitMs
        requestId
        startedAt
        latencyMs
      }
      cacheEntry {
        key
        hitCount
        createdBy {
          id
        }
      }
    }
  }
`);

function dataOf<T>(result: GraphQLResponse<T>): T {
  expect(result.errors).toBeUndefined();
  return result.data!;
}

describe.each(databaseKinds)('the call history through the API on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: apiKey }), { sleep: async () => {} });
  });
  afterAll(async () => {
    await testApp?.dispose();
    await fake?.close();
  });
  // Each test reads the whole history, so each starts from an empty one (and an empty cache).
  beforeEach(async () => {
    fake.reset();
    await testApp.services.history.flush();
    await testApp.services.database.prisma.$executeRawUnsafe('TRUNCATE "LlmAttempt", "LlmCallBody", "LlmCall", "CacheEntry"');
    testApp.services.cache.forget(null);
  });

  async function send(input: SendMessageInput) {
    return dataOf(await testApp.execute(SendMessageMutation, { input })).sendMessage;
  }

  async function page(variables: { first?: number; after?: string | null; filter?: CallFilter; orderBy?: CallOrder }) {
    return dataOf(await testApp.execute(CallsQuery, variables)).calls;
  }

  /** Every page of a query, following endCursor. */
  async function allPages(variables: { first: number; filter?: CallFilter; orderBy?: CallOrder }) {
    const pages = [];
    let after: string | null = null;
    do {
      const current = await page({ ...variables, after });
      pages.push(current);
      after = current.pageInfo.hasNextPage ? current.pageInfo.endCursor : null;
    } while (after !== null && pages.length < 50);
    return pages;
  }

  async function ids(filter: CallFilter): Promise<string[]> {
    const result = await page({ first: 100, filter });
    expect(result.totalCount, `totalCount of ${JSON.stringify(filter)}`).toBe(result.edges.length);
    return result.edges.map((edge) => edge.node.id).sort();
  }

  it('pages on with endCursor while new calls arrive: no duplicates, none missing, newest first', async () => {
    const older: string[] = [];
    for (let index = 0; index < 7; index++) older.push((await send({ messages: [{ role: 'USER', content: `older ${index}` }] })).call.id);
    await testApp.services.history.flush();

    const first = await page({ first: 3 });
    expect(first.edges.map((edge) => edge.node.id)).toEqual([older[6], older[5], older[4]]);
    expect(first.totalCount).toBe(7);
    expect(first.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false, startCursor: first.edges[0]!.cursor, endCursor: first.edges[2]!.cursor });

    const newer: string[] = [];
    for (let index = 0; index < 5; index++) newer.push((await send({ messages: [{ role: 'USER', content: `newer ${index}` }] })).call.id);
    await testApp.services.history.flush();

    const following = [];
    let after: string | null = first.pageInfo.endCursor;
    while (after !== null) {
      const next = await page({ first: 3, after });
      expect(next.totalCount).toBe(12);
      expect(next.pageInfo.hasPreviousPage).toBe(true);
      following.push(next);
      after = next.pageInfo.hasNextPage ? next.pageInfo.endCursor : null;
    }
    expect(following.map((next) => next.edges.map((edge) => edge.node.id))).toEqual([[older[3], older[2], older[1]], [older[0]]]);
    expect(following.at(-1)!.pageInfo.hasNextPage).toBe(false);

    const fresh = await page({ first: 100 });
    expect(fresh.edges.map((edge) => edge.node.id)).toEqual([...newer].reverse().concat([...older].reverse()));
    expect(fresh.pageInfo.hasNextPage).toBe(false);
    const empty = await page({ first: 0 });
    expect(empty.edges).toEqual([]);
    expect(empty.totalCount).toBe(12);
  });

  it('orders by latency and by tokens across pages, ties broken the same way on every page', async () => {
    const latencies = [5, 1, 5, 3, 5, 1, 2, 5];
    const tokens = [null, 10, 30, 10, null, 20, 5, 10];
    const rows: Prisma.LlmCallCreateManyInput[] = latencies.map((latencyMs, index) => ({
      id: randomUUID(),
      createdAt: new Date(Date.UTC(2024, 0, 1, 0, 0, index)),
      kind: 'CHAT',
      apiType: 'openai',
      model: 'gpt-4o-mini',
      status: 'SUCCESS',
      cacheStatus: 'BYPASS',
      latencyMs,
      promptTokens: tokens[index],
      completionTokens: tokens[index] === null ? null : 0,
      totalTokens: tokens[index],
    }));
    await testApp.services.database.prisma.llmCall.createMany({ data: rows });
    const byId = new Map(rows.map((row) => [row.id!, row]));
    const compareIds = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

    const check = async (orderBy: CallOrder, sortKey: (row: Prisma.LlmCallCreateManyInput) => number) => {
      const pages = await allPages({ first: 3, orderBy });
      const seen = pages.flatMap((current) => current.edges.map((edge) => edge.node.id));
      expect(pages.map((current) => current.edges.length)).toEqual([3, 3, 2]);
      const sign = orderBy.direction === 'ASC' ? 1 : -1;
      const expected = [...rows].sort((a, b) => sign * (sortKey(a) - sortKey(b) || compareIds(a.id!, b.id!))).map((row) => row.id);
      expect(seen).toEqual(expected);
      expect(new Set(seen).size).toBe(rows.length);
      return seen.map((id) => byId.get(id)!);
    };

    const ascending = await check({ field: 'LATENCY', direction: 'ASC' }, (row) => row.latencyMs);
    expect(ascending.map((row) => row.latencyMs)).toEqual([1, 1, 2, 3, 5, 5, 5, 5]);
    const descending = await check({ field: 'LATENCY', direction: 'DESC' }, (row) => row.latencyMs);
    expect(descending.map((row) => row.latencyMs)).toEqual([5, 5, 5, 5, 3, 2, 1, 1]);
    const byTokens = await check({ field: 'TOKENS', direction: 'DESC' }, (row) => row.totalTokens ?? -1);
    // Calls without usage come last when descending.
    expect(byTokens.map((row) => row.totalTokens ?? null)).toEqual([30, 20, 10, 10, 10, 5, null, null]);
  });

  it('narrows by each filter: models, statuses, cache statuses, tags, text, kinds, error codes, cache keys, from and to', async () => {
    const apple = await send({ messages: [{ role: 'USER', content: 'Apple pie with 100% butter; she said "yes"' }], tags: ['red'] });
    const banana: SendMessageInput = { messages: [{ role: 'USER', content: 'Banana split' }], model: 'gpt-4o', cache: 'USE' };
    const bananaMiss = await send({ ...banana, tags: ['blue'] });
    expect(bananaMiss.cacheStatus).toBe('MISS');
    await sleep(5);
    const boundary = new Date();
    await sleep(5);
    const bananaHit = await send({ ...banana, tags: ['green'] });
    expect(bananaHit.cacheStatus).toBe('HIT');
    fake.script('chat', { error: { status: 400, message: 'Invalid prompt', code: 'invalid_prompt' } });
    const failed = await testApp.execute(SendMessageMutation, { input: { messages: [{ role: 'USER', content: 'Cherry tart' }], model: 'gpt-4o' } });
    const cherry = (failed.errors![0]!.extensions!.details as { callId: string }).callId;
    const durian = dataOf(await testApp.execute(EmbeddingQuery, { text: 'Durian smoothie' })).embedding.call.id;
    await testApp.services.history.flush();

    const sorted = (...values: string[]) => [...values].sort();
    const all = sorted(apple.call.id, bananaMiss.call.id, bananaHit.call.id, cherry, durian);
    expect(await ids({})).toEqual(all);
    expect(await ids({ models: ['gpt-4o'] })).toEqual(sorted(bananaMiss.call.id, bananaHit.call.id, cherry));
    expect(await ids({ models: ['gpt-4o-mini', 'text-embedding-3-small'] })).toEqual(sorted(apple.call.id, durian));
    expect(await ids({ statuses: ['ERROR'] })).toEqual([cherry]);
    expect(await ids({ statuses: ['SUCCESS'] })).toEqual(sorted(apple.call.id, bananaMiss.call.id, bananaHit.call.id, durian));
    expect(await ids({ cacheStatuses: ['HIT'] })).toEqual([bananaHit.call.id]);
    expect(await ids({ cacheStatuses: ['MISS'] })).toEqual([bananaMiss.call.id]);
    expect(await ids({ cacheStatuses: ['BYPASS'] })).toEqual(sorted(apple.call.id, cherry, durian));
    expect(await ids({ tags: ['blue'] })).toEqual([bananaMiss.call.id]);
    expect(await ids({ tags: ['green', 'red'] })).toEqual(sorted(apple.call.id, bananaHit.call.id));
    expect(await ids({ tags: ['purple'] })).toEqual([]);
    expect(await ids({ text: 'BANANA' })).toEqual(sorted(bananaMiss.call.id, bananaHit.call.id));
    expect(await ids({ text: 'durian' })).toEqual([durian]);
    expect(await ids({ text: '100%' })).toEqual([apple.call.id]);
    expect(await ids({ text: 'said "yes"' })).toEqual([apple.call.id]);
    expect(await ids({ text: 'no such text' })).toEqual([]);
    // The text of the messages or embedded texts, not the keys and parameters of the request.
    expect(await ids({ text: 'max_tokens' })).toEqual([]);
    expect(await ids({ kinds: ['EMBEDDING'] })).toEqual([durian]);
    expect(await ids({ kinds: ['CHAT'] })).toEqual(sorted(apple.call.id, bananaMiss.call.id, bananaHit.call.id, cherry));
    expect(await ids({ errorCodes: ['PROVIDER_BAD_REQUEST'] })).toEqual([cherry]);
    expect(await ids({ cacheKeys: [bananaMiss.call.cacheKey!] })).toEqual(sorted(bananaMiss.call.id, bananaHit.call.id));
    expect(await ids({ apiTypes: ['azure'] })).toEqual([]);
    expect(await ids({ to: boundary.toISOString() })).toEqual(sorted(apple.call.id, bananaMiss.call.id));
    expect(await ids({ from: boundary.toISOString() })).toEqual(sorted(bananaHit.call.id, cherry, durian));
    expect(await ids({ from: boundary.toISOString(), models: ['gpt-4o'], statuses: ['SUCCESS'] })).toEqual([bananaHit.call.id]);
  });

  it('call(id) shows every attempt of a retried call and the cache entry it wrote; an unknown id is null', async () => {
    fake.script('chat', [
      { error: { status: 429, message: 'Slow down', code: 'rate_limit_exceeded' }, headers: { 'retry-after': '1' } },
      { json: chatCompletion({ content: 'at last', model: 'gpt-4o-mini', usage: { prompt_tokens: 3, completion_tokens: 2 } }) },
    ]);
    const sent = await send({ messages: [{ role: 'USER', content: 'Try again' }], cache: 'USE' });
    expect(fake.requestsTo('chat')).toHaveLength(2);
    await testApp.services.history.flush();

    const call = dataOf(await testApp.execute(CallQuery, { id: sent.call.id })).call!;
    expect(call).toMatchObject({ id: sent.call.id, status: 'SUCCESS', cacheStatus: 'MISS', attemptCount: 2 });
    expect(call.attempts).toEqual([
      expect.objectContaining({ number: 1, httpStatus: 429, errorCode: 'PROVIDER_RATE_LIMITED', waitMs: 1000, requestId: expect.stringMatching(/^req_/) }),
      expect.objectContaining({ number: 2, httpStatus: 200, errorCode: null, waitMs: null, requestId: expect.stringMatching(/^req_/) }),
    ]);
    expect(Date.parse(call.attempts[1]!.startedAt)).toBeGreaterThanOrEqual(Date.parse(call.attempts[0]!.startedAt));
    expect(call.cacheEntry).toEqual({ key: call.cacheKey, hitCount: 0, createdBy: { id: sent.call.id } });

    expect(dataOf(await testApp.execute(CallQuery, { id: randomUUID() })).call).toBeNull();
  });
});
