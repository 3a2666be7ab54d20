import { Agent } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Tiktoken } from 'js-tiktoken/lite';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import * as tokens from '../../src/llm/tokens.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, postGraphQL, send, watchHealth, type GraphQLAnswer, type HealthReport, type Listening } from '../support/http.ts';

// Hostile requests are generated (megabytes, thousands of levels): plain strings, not codegen documents.

/** How long /health may take while a hostile request is being handled. */
const healthBoundMs = 100;
/** A sample over the bound is retried once; even the first answer must stay under this, or the event loop was blocked. */
const healthHardCapMs = 1000;


const sendMessage = 'mutation HostileSend($input: SendMessageInput!) { sendMessage(input: $input) { message { content } call { id } } }';

const measured: Record<string, string> = {};

describe.each(databaseKinds)('hostile inputs over real HTTP, on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  const agent = new Agent({ keepAlive: true, maxSockets: 20 });

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    // As main.ts does at start: building an encoder parses its whole rank table (about half a second).
    tokens.countTextTokens('', 'gpt-4o');
    testApp = await createTestApp(kind, testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\n`, { OPENAI_API_KEY: 'sk-hostile' }));
    server = await listen(testApp.app);
    // The first call compiles and connects what every later one reuses: the cases measure hostile input, not a cold start.
    await post({ query: sendMessage, variables: { input: { messages: [{ role: 'USER', content: 'warm up' }] } } });
    await testApp.services.history.flush();
  });

  afterAll(async () => {
    agent.destroy();
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
    if (Object.keys(measured).length > 0) console.info(`hostile inputs on ${kind}:\n${Object.entries(measured).map(([name, value]) => `  ${name}: ${value}`).join('\n')}`);
  });

  beforeEach(() => fake.reset());

  const post = (request: Parameters<typeof postGraphQL>[1]) => postGraphQL(server.port, request, agent);

  /** Runs the hostile request while /health is asked every few milliseconds; /health must keep answering within the bound. */
  async function whileWatched<T>(name: string, hostile: () => Promise<T>): Promise<{ result: T; health: HealthReport }> {
    const watch = watchHealth(server.port, { boundMs: healthBoundMs });
    let result: T;
    let health: HealthReport;
    try {
      result = await hostile();
    } finally {
      health = await watch.stop();
    }
    measured[name] = `/health max ${health.maxMs.toFixed(1)} ms (first answers max ${health.rawMaxMs.toFixed(1)} ms, ${health.samples} samples, ${health.retries} retried)`;
    expect(health.maxMs, `/health latency while "${name}" was handled`).toBeLessThan(healthBoundMs);
    expect(health.rawMaxMs, `/health first-answer latency while "${name}" was handled`).toBeLessThan(healthHardCapMs);
    return { result, health };
  }

  /** 100 ordinary calls after the hostile one: all answered, all in the history. */
  async function innocentCallsStillWork(name: string): Promise<void> {
    const tag = `innocent-${name}-${kind}`;
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, index) => post({ query: sendMessage, variables: { input: { messages: [{ role: 'USER', content: `innocent ${index}` }], tags: [tag] } } })),
    );
    expect(answers.filter((answer) => answer.errors !== undefined || answer.status !== 200).map((answer) => answer.errors)).toEqual([]);
    expect(answers.map((answer) => answer.data.sendMessage.message.content).sort()).toEqual(Array.from({ length: 100 }, (_, index) => `echo: innocent ${index}`).sort());
    await testApp.services.history.flush();
    expect(await testApp.services.database.prisma.llmCall.count({ where: { tags: { has: tag } } })).toBe(100);
  }

  /** The answer is one error with that code, and no 500. */
  function refused(answer: GraphQLAnswer, code: string) {
    expect(answer.status, JSON.stringify(answer).slice(0, 500)).not.toBe(500);
    expect(answer.errors?.map((error) => error.extensions?.code), JSON.stringify(answer).slice(0, 500)).toEqual([code]);
    return answer.errors![0]!;
  }

  /** The refused call's history row: an error with the code, nothing of the refused input kept. */
  async function refusedCallRow(callId: unknown) {
    expect(typeof callId).toBe('string');
    await testApp.services.history.flush();
    const prisma = testApp.services.database.prisma;
    const [call, body] = await Promise.all([prisma.llmCall.findUnique({ where: { id: callId as string } }), prisma.llmCallBody.findUnique({ where: { callId: callId as string } })]);
    expect(call).toMatchObject({ status: 'ERROR', errorCode: 'BAD_USER_INPUT' });
    return { call: call!, body };
  }

  it('stores a lone UTF-16 surrogate as U+FFFD and answers the call normally', async () => {
    // The escape itself goes over the wire, as a client's JSON.stringify writes it.
    const body = `{"query":${JSON.stringify(sendMessage)},"variables":{"input":{"messages":[{"role":"USER","content":"bad \\ud800"}]}}}`;
    const { result } = await whileWatched('lone surrogate', () => post(body));
    expect(result.errors).toBeUndefined();
    expect(result.data.sendMessage.message.content).toBe('echo: bad \ud800');
    await testApp.services.history.flush();
    const stored = await testApp.services.database.prisma.llmCallBody.findUnique({ where: { callId: result.data.sendMessage.call.id } });
    expect((stored?.requestBody as { messages: { content: string }[] }).messages[0]!.content).toBe('bad \ufffd');
    expect(JSON.stringify(stored?.responseBody)).toContain('echo: bad \ufffd');
    await innocentCallsStillWork('surrogate');
  });

  it('refuses metadata nested 5,000 levels with MAX_METADATA_DEPTH, and records the call without it', async () => {
    const metadata = `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`;
    const body = `{"query":${JSON.stringify(sendMessage)},"variables":{"input":{"messages":[{"role":"USER","content":"deep"}],"metadata":${metadata}}}}`;
    const { result } = await whileWatched('metadata 5,000 levels', () => post(body));
    const error = refused(result, 'BAD_USER_INPUT');
    expect(error.extensions?.details).toMatchObject({ field: 'metadata', limit: 'MAX_METADATA_DEPTH', max: 20 });
    const { body: stored } = await refusedCallRow(error.extensions?.details?.callId);
    expect(stored?.metadata ?? null).toBeNull();
    expect(fake.requests).toHaveLength(0);
    await innocentCallsStillWork('metadata-depth');
  });

  it('counts tokens exactly as js-tiktoken does for ordinary text', async () => {
    const text = `${'The quick brown fox jumps over the lazy dog. '.repeat(40)}${'a'.repeat(200)}`;
    const { result } = await whileWatched('tokenCount 2,000 characters', () => post({ query: 'query Count($text: String!) { tokenCount(text: $text, model: "gpt-4o") { tokens } }', variables: { text } }));
    expect(result.errors).toBeUndefined();
    expect(result.data.tokenCount.tokens).toBe(new Tiktoken(o200kBase).encode(text, [], []).length);
    await innocentCallsStillWork('token-count-small');
  });

  it('counts 16,000 letters of one word exactly without blocking /health', async () => {
    const { result } = await whileWatched('tokenCount 16,000 letters', () =>
      post({ query: 'query Count($text: String!) { tokenCount(text: $text, model: "gpt-4o") { tokens } }', variables: { text: 'a'.repeat(16_000) } }),
    );
    expect(result.errors).toBeUndefined();
    // js-tiktoken's count, measured once here (it took 27 s).
    expect(result.data.tokenCount.tokens).toBe(2000);
    await innocentCallsStillWork('token-count-16k');
  });

  it('counts 64,000 letters of one word without blocking /health', async () => {
    const { result } = await whileWatched('tokenCount 64,000 letters', () =>
      post({ query: 'query Count($text: String!) { tokenCount(text: $text, model: "gpt-4o") { tokens } }', variables: { text: 'a'.repeat(64_000) } }),
    );
    expect(result.errors).toBeUndefined();
    expect(Number.isInteger(result.data.tokenCount.tokens) && result.data.tokenCount.tokens > 0).toBe(true);
    await innocentCallsStillWork('token-count-64k');
  });

  it("answers a message of one 16,000-letter word, and the history's estimate does not block /health", async () => {
    const { result } = await whileWatched('sendMessage 16,000-letter word, then the history', async () => {
      const answer = await post({ query: sendMessage, variables: { input: { messages: [{ role: 'USER', content: 'a'.repeat(16_000) }] } } });
      // The estimate runs when the writer takes the row: the watch spans it.
      await testApp.services.history.flush();
      return answer;
    });
    expect(result.errors).toBeUndefined();
    const call = await testApp.services.database.prisma.llmCall.findUnique({ where: { id: result.data.sendMessage.call.id } });
    expect(call?.estimatedPromptTokens).toBeGreaterThan(2000);
    await innocentCallsStillWork('long-word');
  });

  it('refuses tokenCount of more than MAX_CHARACTERS_PER_CALL characters before counting them', async () => {
    const { result } = await whileWatched('tokenCount 1,000,001 letters', () =>
      post({ query: 'query Count($text: String!) { tokenCount(text: $text) { tokens } }', variables: { text: 'a'.repeat(1_000_001) } }),
    );
    expect(refused(result, 'BAD_USER_INPUT').extensions?.details).toEqual({ field: 'text', limit: 'MAX_CHARACTERS_PER_CALL', max: 1_000_000, actual: 1_000_001 });
    await innocentCallsStillWork('token-count-too-long');
  });

  for (const chunked of [false, true]) {
    it(`refuses a 20 MB message ${chunked ? 'sent without a length (chunked)' : 'with its content-length'} with 413 before reading it all`, async () => {
      const size = 20 * 1024 * 1024;
      const body = Buffer.from(`{"query":${JSON.stringify(sendMessage)},"variables":{"input":{"messages":[{"role":"USER","content":"${'a'.repeat(size)}"}]}}}`);
      const loop = monitorEventLoopDelay({ resolution: 1 });
      loop.enable();
      const name = `20 MB body${chunked ? ', chunked' : ''}`;
      const { result } = await whileWatched(name, () => send(server.port, { method: 'POST', path: '/graphql', headers: { 'content-type': 'application/json' }, body, chunked }));
      loop.disable();
      measured[`${name}, refused in`] = `${result.ms.toFixed(1)} ms, after the client had written ${(result.bytesWritten / 1024 / 1024).toFixed(1)} MiB; event loop delay max ${(loop.max / 1e6).toFixed(1)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(1)} ms`;
      expect(result.status).toBe(413);
      const answer = JSON.parse(result.text) as GraphQLAnswer;
      expect(answer.errors?.[0]?.extensions).toEqual({
        code: 'PAYLOAD_TOO_LARGE',
        details: { limit: 'MAX_BODY_BYTES', max: 4 * 1024 * 1024, ...(chunked ? {} : { actual: body.length }) },
      });
      // The server answered and closed the connection long before the client could send it all.
      expect(result.bytesWritten).toBeLessThan(body.length / 2);
      expect(result.ms).toBeLessThan(2000);
      expect(fake.requests).toHaveLength(0);
      await innocentCallsStillWork(chunked ? 'body-chunked' : 'body-length');
    });
  }

  for (const levels of [1000, 10_000]) {
    it(`refuses a query ${levels} levels deep with QUERY_TOO_DEEP`, async () => {
      const query = `${'{ calls '.repeat(levels)}{ id ${'} '.repeat(levels + 1)}`;
      const { result } = await whileWatched(`query ${levels} levels deep`, () => post({ query }));
      expect(refused(result, 'QUERY_TOO_DEEP').extensions?.details).toMatchObject({ limit: 'MAX_QUERY_DEPTH' });
      await innocentCallsStillWork(`query-depth-${levels}`);
    });
  }

  it('refuses pages of calls nested in their cache entries with QUERY_TOO_COMPLEX', async () => {
    const query = `{ calls(first: 100) { edges { node { cacheEntry { servedCalls(first: 100) { edges { node { cacheEntry { servedCalls(first: 100) {
      edges { node { id requestBody responseBody } } } } } } } } } } } }`;
    const { result } = await whileWatched('nested pages', () => post({ query }));
    expect(refused(result, 'QUERY_TOO_COMPLEX').extensions?.details).toMatchObject({ limit: 'MAX_QUERY_COST', max: 50_000 });
    await innocentCallsStillWork('query-cost');
  });

  it('refuses 50 aliased sendMessage before any reaches the provider', async () => {
    const aliases = Array.from({ length: 50 }, (_, index) => `a${index}: sendMessage(input: { messages: [{ role: USER, content: "alias ${index}" }] }) { message { content } }`);
    const { result } = await whileWatched('50 aliased sendMessage', () => post({ query: `mutation { ${aliases.join(' ')} }` }));
    expect(['TOO_MANY_ALIASES', 'TOO_MANY_PAID_OPERATIONS']).toContain(result.errors?.[0]?.extensions?.code);
    expect(result.errors).toHaveLength(1);
    expect(result.data ?? null).toBeNull();
    expect(fake.requests).toHaveLength(0);
    await innocentCallsStillWork('aliases');
  });

  const message = (content: string) => ({ role: 'USER', content });
  const callInputs: { name: string; input: Record<string, unknown>; details: Record<string, unknown> }[] = [
    {
      name: 'too many messages',
      input: { messages: Array.from({ length: 1001 }, (_, index) => message(`m${index}`)) },
      details: { field: 'messages', limit: 'MAX_MESSAGES', max: 1000, actual: 1001 },
    },
    {
      name: 'too many characters',
      input: { messages: [message('a'.repeat(600_000)), message('b'.repeat(400_001))] },
      details: { field: 'messages', limit: 'MAX_CHARACTERS_PER_CALL', max: 1_000_000, actual: 1_000_001 },
    },
    {
      name: 'too many tags',
      input: { messages: [message('tags')], tags: Array.from({ length: 21 }, (_, index) => `tag-${index}`) },
      details: { field: 'tags', limit: 'MAX_TAGS', max: 20, actual: 21 },
    },
    {
      name: 'a tag too long',
      input: { messages: [message('tag')], tags: ['short', 't'.repeat(201)] },
      details: { field: 'tags', limit: 'MAX_TAG_LENGTH', max: 200, actual: 201, index: 1 },
    },
    {
      name: 'metadata too big',
      input: { messages: [message('metadata')], metadata: { blob: 'x'.repeat(65_536) } },
      details: { field: 'metadata', limit: 'MAX_METADATA_BYTES', max: 65_536, actual: 65_536 + '{"blob":""}'.length },
    },
  ];
  for (const { name, input, details } of callInputs) {
    it(`refuses a call with ${name}: BAD_USER_INPUT naming the field and the limit, still in the history`, async () => {
      const { result } = await whileWatched(name, () => post({ query: sendMessage, variables: { input } }));
      const error = refused(result, 'BAD_USER_INPUT');
      const { callId, ...rest } = error.extensions!.details!;
      expect(rest).toEqual(details);
      const { call, body } = await refusedCallRow(callId);
      if (details.field === 'tags') expect(call.tags).toEqual([]);
      if (details.field === 'metadata') expect(body?.metadata ?? null).toBeNull();
      expect(fake.requests).toHaveLength(0);
      await innocentCallsStillWork(name.replaceAll(' ', '-'));
    });
  }

  it('refuses embeddings of more than MAX_CHARACTERS_PER_CALL characters together', async () => {
    const { result } = await whileWatched('embeddings 1,000,002 characters', () =>
      post({ query: 'query Embed($texts: [String!]!) { embeddings(texts: $texts) { dimensions } }', variables: { texts: ['a'.repeat(500_001), 'b'.repeat(500_001)] } }),
    );
    const error = refused(result, 'BAD_USER_INPUT');
    expect(error.extensions?.details).toMatchObject({ field: 'texts', limit: 'MAX_CHARACTERS_PER_CALL', actual: 1_000_002 });
    await refusedCallRow(error.extensions?.details?.callId);
    expect(fake.requests).toHaveLength(0);
    await innocentCallsStillWork('embeddings-characters');
  });
});
