import { createClient, type Client, type ExecutionResult } from 'graphql-sse';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletionChunks, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, type Listening } from '../support/http.ts';

const masterKey = 'cb-stream-master-SECRET';

const streamSubscription = `subscription ($input: SendMessageInput!) {
  sendMessageStream(input: $input) {
    delta { choice content reasoning finishReason toolCalls { index id name arguments } }
    result { message { content toolCalls { id name arguments } } choices { index message { content } } usage { totalTokens } cacheStatus call { id status streamed timeToFirstTokenMs } }
  }
}`;

interface StreamEvent {
  sendMessageStream: {
    delta: { choice: number; content: string | null; reasoning: string | null; finishReason: string | null; toolCalls: { index: number; id: string | null; name: string | null; arguments: string | null }[] } | null;
    result: {
      message: { content: string | null; toolCalls: { id: string; name: string; arguments: string }[] };
      choices: { index: number; message: { content: string | null } }[];
      usage: { totalTokens: number } | null;
      cacheStatus: string;
      call: { id: string; status: string; streamed: boolean; timeToFirstTokenMs: number | null };
    } | null;
  };
}

describe.each(databaseKinds)('the sendMessageStream subscription on %s, over GraphQL over SSE with the graphql-sse client', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  let client: Client;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\nCACHE_API_CALLS=True\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-stream-upstream', CALLBOARD_MASTER_KEY: masterKey }));
    server = await listen(testApp.app);
    client = clientFor(masterKey);
  });

  afterAll(async () => {
    client?.dispose();
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
  });

  beforeEach(() => fake.reset());

  const clientFor = (key: string) => createClient({ url: `${server.url}/graphql`, headers: { authorization: `Bearer ${key}` }, retryAttempts: 0, singleConnection: false });

  /** Every event of one subscription, and its error if it ended with one. */
  async function subscribe(variables: Record<string, unknown>, on: Client = client) {
    const events: ExecutionResult<StreamEvent, unknown>[] = [];
    const iterator = on.iterate<StreamEvent>({ query: streamSubscription, variables });
    try {
      for await (const event of iterator) events.push(event);
      return { events, error: null };
    } catch (error) {
      return { events, error };
    }
  }

  const input = (content: string, extra: Record<string, unknown> = {}) => ({ input: { messages: [{ role: 'USER', content }], ...extra } });
  const deltas = (events: ExecutionResult<StreamEvent, unknown>[]) => events.map((event) => event.data?.sendMessageStream.delta).filter((delta) => delta != null);

  it('emits the deltas as the provider streams them, then the result with usage, cacheStatus and the history row', async () => {
    const { events, error } = await subscribe(input('graphql stream of words'));
    expect(error).toBeNull();
    const pieces = deltas(events);
    expect(pieces.filter((delta) => delta.content).length).toBeGreaterThan(3);
    expect(pieces.map((delta) => delta.content ?? '').join('')).toBe('echo: graphql stream of words');
    const result = events.at(-1)!.data!.sendMessageStream.result!;
    expect(result.message.content).toBe('echo: graphql stream of words');
    expect(result.cacheStatus).toBe('MISS');
    expect(result.usage!.totalTokens).toBeGreaterThan(0);
    expect(result.call).toMatchObject({ status: 'SUCCESS', streamed: true });
    expect(result.call.timeToFirstTokenMs).toBeGreaterThan(0);
  });

  it('replays a cached answer as several deltas, reasoning and tool calls included, with no upstream request', async () => {
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }];
    await subscribe(input('cached reasoning', { model: 'fake-reasoner', tools }));
    const { events } = await subscribe(input('cached reasoning', { model: 'fake-reasoner', tools }));
    expect(fake.requestsTo('chat')).toHaveLength(1);
    const pieces = deltas(events);
    expect(pieces.filter((delta) => delta.reasoning).length).toBeGreaterThan(1);
    expect(pieces.map((delta) => delta.reasoning ?? '').join('')).toBe('Thinking about "cached reasoning" first.');
    const calls = pieces.flatMap((delta) => delta.toolCalls);
    expect(calls[0]).toMatchObject({ index: 0, name: 'lookup' });
    const result = events.at(-1)!.data!.sendMessageStream.result!;
    expect(calls.map((call) => call.arguments ?? '').join('')).toBe(result.message.toolCalls[0]!.arguments);
    expect(result.cacheStatus).toBe('HIT');
  });

  it('streams n choices apart', async () => {
    const { events } = await subscribe(input('two ways', { n: 2, cache: 'BYPASS' }));
    const pieces = deltas(events);
    expect(pieces.filter((delta) => delta.choice === 1).map((delta) => delta.content ?? '').join('')).toBe('echo: two ways (choice 1)');
    expect(events.at(-1)!.data!.sendMessageStream.result!.choices.map((choice) => choice.message.content)).toEqual(['echo: two ways', 'echo: two ways (choice 1)']);
  });

  it('ends with a coded error event when the provider cuts the stream, and refuses a VIEWER before anything runs', async () => {
    fake.script('chat', { sseCut: chatCompletionChunks({ content: 'cut in the middle of it', model: 'gpt-4o-mini' }).slice(0, 3) });
    const { events } = await subscribe(input('cut graphql', { cache: 'BYPASS' }));
    const last = events.at(-1)!;
    expect(last.errors?.[0]?.extensions?.code).toBe('STREAM_INTERRUPTED');
    expect(deltas(events).map((delta) => delta.content ?? '').join('')).toBe('cut in ');

    const { key } = await testApp.services.keys.create({ name: 'viewer', role: 'VIEWER', tenant: 'stream' }, 'test');
    const viewer = clientFor(key);
    const refused = await subscribe(input('not for viewers'), viewer);
    viewer.dispose();
    expect(refused.error).toBeNull();
    expect(refused.events.map((event) => event.errors?.[0]?.extensions?.code)).toEqual(['FORBIDDEN']);
    expect(fake.requestsTo('chat')).toHaveLength(1);
  });
});
