import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletionChunks, defaultChatAnswer, defaultChatResponse, embeddingVector, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, type Listening } from '../support/http.ts';

const masterKey = 'cb-door-master-SECRET';

interface CallRow {
  id: string;
  status: string;
  cacheStatus: string;
  errorCode: string | null;
  streamed: boolean;
  timeToFirstTokenMs: number | null;
  attemptCount: number;
  totalTokens: number | null;
  tags: string[];
  cacheKey: string | null;
  responseBody: any;
  requestBody: any;
}

const user = (content: string) => [{ role: 'user' as const, content }];

/** The text of every content delta, per choice. */
function contentOf(chunks: OpenAI.ChatCompletionChunk[], choice = 0): string {
  return chunks.map((chunk) => chunk.choices.find((part) => part.index === choice)?.delta.content ?? '').join('');
}

describe.each(databaseKinds)('the OpenAI-compatible REST door on %s, through the real openai SDK over HTTP', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  /** The master key's client: tenant default, no limits. */
  let client: OpenAI;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\nCACHE_API_CALLS=True\nMAX_ATTEMPTS=3\nWAITING_TIME=0.01\n[Prices]\ngpt-4o-mini=1, 1\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-door-upstream', CALLBOARD_MASTER_KEY: masterKey }));
    server = await listen(testApp.app);
    client = openai(masterKey);
  });

  afterAll(async () => {
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
  });

  beforeEach(() => fake.reset());

  const openai = (apiKey: string) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });

  async function row(id: string): Promise<CallRow> {
    await testApp.services.history.flush();
    const [found] = await testApp.testDatabase.database.query<CallRow>(
      `SELECT c."id", c."status"::text AS "status", c."cacheStatus"::text AS "cacheStatus", c."errorCode", c."streamed", c."timeToFirstTokenMs",
        c."attemptCount", c."totalTokens", c."tags", c."cacheKey", b."responseBody", b."requestBody"
       FROM "LlmCall" c LEFT JOIN "LlmCallBody" b ON b."callId" = c."id" WHERE c."id" = $1`,
      [id],
    );
    if (!found) throw new Error(`no history row ${id}`);
    return found;
  }

  async function entriesUnder(key: string): Promise<number> {
    await testApp.services.history.flush();
    const [counted] = await testApp.testDatabase.database.query<{ count: number }>(`SELECT count(*)::int AS "count" FROM "CacheEntry" WHERE "key" = $1`, [key]);
    return counted!.count;
  }

  async function collect(stream: AsyncIterable<OpenAI.ChatCompletionChunk>) {
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
  }

  describe('chat completions', () => {
    it('answers in OpenAI format through the cache: a MISS, then a HIT with no second upstream request, each with its history row', async () => {
      const request = { model: 'gpt-4o-mini', messages: user('door hello') };
      const first = await client.chat.completions.create(request).withResponse();
      const second = await client.chat.completions.create(request).withResponse();

      expect(first.data.choices[0]!.message.content).toBe('echo: door hello');
      expect(first.data.object).toBe('chat.completion');
      expect(first.response.headers.get('x-callboard-cache-status')).toBe('MISS');
      expect(second.response.headers.get('x-callboard-cache-status')).toBe('HIT');
      expect(second.data.choices).toEqual(first.data.choices);
      expect(fake.requestsTo('chat')).toHaveLength(1);
      const missId = first.response.headers.get('x-callboard-call-id')!;
      const hitId = second.response.headers.get('x-callboard-call-id')!;
      expect(await row(missId)).toMatchObject({ status: 'SUCCESS', cacheStatus: 'MISS', streamed: false, attemptCount: 1 });
      expect(await row(hitId)).toMatchObject({ status: 'SUCCESS', cacheStatus: 'HIT', attemptCount: 0 });
    });

    it('sends upstream only what the caller sent (no configured defaults), with unknown fields passed through unchanged and part of the cache key', async () => {
      const body = { model: 'gpt-4o-mini', messages: user('extras'), seed: 7, user: 'end-user-1', n: 2, logprobs: true, top_logprobs: 2, vendor_knob: { deep: [1, 2] } };
      const answer = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming);
      const sent = fake.requestsTo('chat')[0]!.body;
      expect(sent).toEqual({ ...body, stream: false });
      expect(answer.choices).toHaveLength(2);
      expect(answer.choices[1]!.message.content).toBe('echo: extras (choice 1)');
      expect(answer.choices[0]!.logprobs!.content![0]!.top_logprobs).toHaveLength(2);

      await client.chat.completions.create({ ...body, vendor_knob: { deep: [1, 3] } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(fake.requestsTo('chat')).toHaveLength(2);
    });

    it('carries a tool round trip: tools and tool_choice up, tool_calls back, the tool message with its tool_call_id up again', async () => {
      const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'lookup', description: 'Looks up.', parameters: { type: 'object', properties: { query: { type: 'string' } } } } }];
      const first = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('weather in Oslo'), tools, tool_choice: 'auto' });
      const call = first.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
      expect(first.choices[0]!.finish_reason).toBe('tool_calls');
      expect(call.function).toEqual({ name: 'lookup', arguments: JSON.stringify({ query: 'weather in Oslo' }) });

      const second = await client.chat.completions.create({
        model: 'gpt-4o-mini',
        tools,
        messages: [...user('weather in Oslo'), first.choices[0]!.message, { role: 'tool', tool_call_id: call.id, content: 'sunny, 21 C' }],
      });
      expect(second.choices[0]!.message.content).toBe(`echo: tool ${call.id} answered sunny, 21 C`);
      const sent = fake.requestsTo('chat')[1]!.body;
      expect(sent.messages[1]).toMatchObject({ role: 'assistant', content: null, tool_calls: [{ id: call.id, type: 'function', function: call.function }] });
      expect(sent.messages[2]).toEqual({ role: 'tool', tool_call_id: call.id, content: 'sunny, 21 C' });
    });

    it('sends image parts upstream and counts only text parts toward the prompt', async () => {
      const answer = await client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: [{ type: 'text', text: 'what is this' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }],
      });
      expect(answer.choices[0]!.message.content).toBe('echo: what is this [1 image]');
      expect(fake.requestsTo('chat')[0]!.body.messages[0].content[1]).toEqual({ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } });
    });

    it('takes the cache mode and tags from x-callboard-* headers and refuses a bad mode with a 400', async () => {
      const request = { model: 'gpt-4o-mini', messages: user('header knobs') };
      await client.chat.completions.create(request);
      const bypass = await client.chat.completions.create(request, { headers: { 'x-callboard-cache': 'bypass', 'x-callboard-tags': 'nightly, batch-7' } }).withResponse();
      const refresh = await client.chat.completions.create(request, { headers: { 'x-callboard-cache': 'REFRESH' } }).withResponse();
      expect(bypass.response.headers.get('x-callboard-cache-status')).toBe('BYPASS');
      expect(refresh.response.headers.get('x-callboard-cache-status')).toBe('REFRESH');
      expect(fake.requestsTo('chat')).toHaveLength(3);
      expect((await row(bypass.response.headers.get('x-callboard-call-id')!)).tags).toEqual(['nightly', 'batch-7']);
      const refused = await client.chat.completions.create(request, { headers: { 'x-callboard-cache': 'sometimes' } }).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
      expect((refused as InstanceType<typeof OpenAI.APIError>).code).toBe('BAD_USER_INPUT');
    });
  });

  describe('streams', () => {
    it('streams chunk by chunk with usage when asked, and records the assembled answer, its usage and time to first token', async () => {
      const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('stream me three words'), stream: true, stream_options: { include_usage: true } }).withResponse();
      const chunks = await collect(stream.data);
      expect(stream.response.headers.get('content-type')).toContain('text/event-stream');
      expect(contentOf(chunks)).toBe('echo: stream me three words');
      expect(chunks.filter((chunk) => chunk.choices[0]?.delta.content).length).toBeGreaterThan(3);
      expect(chunks.at(-1)!.usage).toMatchObject({ completion_tokens: 5 });
      const recorded = await row(stream.response.headers.get('x-callboard-call-id')!);
      expect(recorded).toMatchObject({ status: 'SUCCESS', cacheStatus: 'MISS', streamed: true, totalTokens: 9 });
      expect(recorded.timeToFirstTokenMs).toBeGreaterThan(0);
      expect(recorded.responseBody.choices[0].message.content).toBe('echo: stream me three words');
      // Callboard asks for usage itself: the provider was asked for it whatever the caller said.
      expect(fake.requestsTo('chat')[0]!.body.stream_options).toEqual({ include_usage: true });
    });

    it('sends no usage chunk unless asked', async () => {
      const chunks = await collect(await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('no usage please'), stream: true }));
      expect(chunks.every((chunk) => chunk.choices.length > 0 && chunk.usage === undefined)).toBe(true);
    });

    it('replays a cached answer as a stream of many chunks (content, tool calls and reasoning alike), and serves a streamed answer to a plain request', async () => {
      const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'search', parameters: { type: 'object' } } }];
      const plain = await client.chat.completions.create({ model: 'fake-reasoner', messages: user('think then call'), tools });
      const replay = await collect(await client.chat.completions.create({ model: 'fake-reasoner', messages: user('think then call'), tools, stream: true }));
      expect(fake.requestsTo('chat')).toHaveLength(1);
      const reasoning = replay.map((chunk) => (chunk.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '').join('');
      expect(reasoning).toBe((plain.choices[0]!.message as { reasoning_content?: string }).reasoning_content);
      expect(replay.filter((chunk) => (chunk.choices[0]?.delta as { reasoning_content?: string })?.reasoning_content).length).toBeGreaterThan(2);
      const argumentsPieces = replay.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls ?? []);
      expect(argumentsPieces[0]).toMatchObject({ index: 0, id: plain.choices[0]!.message.tool_calls![0]!.id, function: { name: 'search' } });
      expect(argumentsPieces.map((piece) => piece.function?.arguments ?? '').join('')).toBe((plain.choices[0]!.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments);
      expect(replay.at(-1)!.choices[0]!.finish_reason).toBe('tool_calls');

      const streamed = await collect(await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('streamed first'), stream: true }));
      const after = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('streamed first') }).withResponse();
      expect(after.response.headers.get('x-callboard-cache-status')).toBe('HIT');
      expect(after.data.choices[0]!.message.content).toBe(contentOf(streamed));
      expect(fake.requestsTo('chat')).toHaveLength(2);
    });

    it('streams tool calls as the provider sends them, which the SDK assembles', async () => {
      const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'a', parameters: { type: 'object' } } }, { type: 'function', function: { name: 'b', parameters: { type: 'object' } } }];
      const runner = client.chat.completions.stream({ model: 'gpt-4o-mini', messages: user('two tools at once'), tools, parallel_tool_calls: true });
      const final = await runner.finalChatCompletion();
      const expected = defaultChatAnswer({ model: 'gpt-4o-mini', messages: user('two tools at once'), tools });
      expect(final.choices[0]!.message.tool_calls!.map((call) => [call.id, (call as OpenAI.ChatCompletionMessageFunctionToolCall).function.name, (call as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments])).toEqual(
        expected.choices[0]!.toolCalls!.map((call) => [call.id, call.name, call.arguments]),
      );
    });

    it('retries a failure before the first byte, then streams', async () => {
      fake.script('chat', [{ error: { status: 503, message: 'busy' } }, { sse: chatCompletionChunks({ content: 'after a retry', model: 'gpt-4o-mini', includeUsage: true }) }]);
      const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('retry then stream'), stream: true }).withResponse();
      expect(contentOf(await collect(stream.data))).toBe('after a retry');
      expect(await row(stream.response.headers.get('x-callboard-call-id')!)).toMatchObject({ status: 'SUCCESS', attemptCount: 2 });
    });

    it('ends a stream the provider cuts with an error event, never [DONE]; the row is ERROR with the partial answer, and nothing is cached', async () => {
      const events = chatCompletionChunks({ content: 'half of an answer that never ends', model: 'gpt-4o-mini' });
      fake.script('chat', { sseCut: events.slice(0, 4) });
      const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('cut me off'), stream: true }).withResponse();
      const received: OpenAI.ChatCompletionChunk[] = [];
      const failure = await (async () => {
        for await (const chunk of stream.data) received.push(chunk);
      })().catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(OpenAI.APIError);
      expect((failure as InstanceType<typeof OpenAI.APIError>).code).toBe('STREAM_INTERRUPTED');
      expect(contentOf(received)).toBe('half of an ');
      const recorded = await row(stream.response.headers.get('x-callboard-call-id')!);
      expect(recorded).toMatchObject({ status: 'ERROR', errorCode: 'STREAM_INTERRUPTED', streamed: true });
      expect(recorded.responseBody.choices[0].message.content).toBe('half of an ');
      expect(recorded.cacheKey).not.toBeNull();
      expect(await entriesUnder(recorded.cacheKey!)).toBe(0);
      fake.reset();
      const again = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('cut me off') }).withResponse();
      expect(again.response.headers.get('x-callboard-cache-status')).toBe('MISS');
    });

    it('stops the upstream request when the client goes away, and records the call as ABORTED', async () => {
      fake.script('chat', (request) => ({ ...(defaultChatResponse(request) as { sse: unknown[] }), sseDelayMs: 100 }));
      const controller = new AbortController();
      const stream = await client.chat.completions
        .create({ model: 'gpt-4o-mini', messages: user('a slow answer of many many words to abandon'), stream: true }, { signal: controller.signal })
        .withResponse();
      const id = stream.response.headers.get('x-callboard-call-id')!;
      // The SDK ends the loop quietly or with an APIUserAbortError, depending on where the abort lands.
      await (async () => {
        for await (const _chunk of stream.data) controller.abort();
      })().catch((error: unknown) => expect(error).toBeInstanceOf(OpenAI.APIUserAbortError));
      await expect.poll(() => fake.streamsAborted, { timeout: 5000 }).toBe(1);
      await expect.poll(async () => (await row(id).catch(() => null))?.errorCode, { timeout: 5000 }).toBe('ABORTED');
    });
  });

  describe('embeddings', () => {
    it('answers float and base64 vectors (the SDK asks base64 by default), with dimensions sent upstream and in the cache key', async () => {
      const decoded = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta'] });
      expect(decoded.data.map((item) => item.embedding)).toEqual([embeddingVector('alpha', 8), embeddingVector('beta', 8)]);
      const floats = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'alpha', encoding_format: 'float' }).withResponse();
      expect(floats.data.data[0]!.embedding).toEqual(embeddingVector('alpha', 8));
      expect(floats.response.headers.get('x-callboard-cache-status')).toBe('HIT');
      const shorter = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'alpha', dimensions: 4 });
      expect(shorter.data[0]!.embedding).toHaveLength(4);
      expect(fake.requestsTo('embeddings').map((request) => request.body.dimensions)).toEqual([undefined, 4]);
    });

    it('refuses token arrays with a 400', async () => {
      await expect(client.embeddings.create({ model: 'text-embedding-3-small', input: [[1, 2, 3]] })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    });
  });

  describe('models', () => {
    it('lists the configured models and finds one by id', async () => {
      const ids = (await client.models.list()).data.map((model) => model.id);
      expect(ids).toEqual(expect.arrayContaining(['gpt-4o-mini', 'text-embedding-3-small']));
      expect((await client.models.retrieve('gpt-4o-mini')).id).toBe('gpt-4o-mini');
      await expect(client.models.retrieve('no-such-model')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    });
  });

  describe('errors, in OpenAI shape so that the SDK raises its own classes', () => {
    it('401 without a key or with a wrong one', async () => {
      await expect(openai('cb_not-a-real-key').chat.completions.create({ model: 'gpt-4o-mini', messages: user('x') })).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
      await expect(openai('sk-someone-elses').models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
      expect(fake.requests).toHaveLength(0);
    });

    it('403 for a VIEWER calling a model, which may still list models', async () => {
      const { key } = await testApp.services.keys.create({ name: 'viewer', role: 'VIEWER', tenant: 'door' }, 'test');
      const viewer = openai(key);
      const refused = await viewer.chat.completions.create({ model: 'gpt-4o-mini', messages: user('x') }).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(OpenAI.PermissionDeniedError);
      expect((refused as InstanceType<typeof OpenAI.APIError>).code).toBe('FORBIDDEN');
      expect((await viewer.models.list()).data.length).toBeGreaterThan(0);
      expect(fake.requests).toHaveLength(0);
    });

    it('429 with retry-after when a key is over its rate, without calling upstream', async () => {
      const { key } = await testApp.services.keys.create({ name: 'slow', role: 'MEMBER', tenant: 'door', limits: { requestsPerMinute: 1 } }, 'test');
      const member = openai(key);
      await member.chat.completions.create({ model: 'gpt-4o-mini', messages: user('first'), }, { headers: { 'x-callboard-cache': 'bypass' } });
      const refused = (await member.chat.completions.create({ model: 'gpt-4o-mini', messages: user('second') }, { headers: { 'x-callboard-cache': 'bypass' } }).catch((error: unknown) => error)) as InstanceType<typeof OpenAI.APIError>;
      expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
      expect(refused.code).toBe('RATE_LIMITED');
      expect(Number(refused.headers?.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(fake.requestsTo('chat')).toHaveLength(1);
    });

    it('400 for a bad request, 404 for an unknown path, 5xx when the provider keeps failing, each naming its call', async () => {
      const bad = (await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'wizard', content: 'x' }] as never }).catch((error: unknown) => error)) as InstanceType<typeof OpenAI.APIError>;
      expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
      expect(bad.param).toBe('messages');
      await expect(client.completions.create({ model: 'gpt-4o-mini', prompt: 'legacy' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);

      fake.script('chat', { error: { status: 500, message: 'upstream broke' } });
      const failed = (await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('doomed') }).catch((error: unknown) => error)) as InstanceType<typeof OpenAI.APIError>;
      expect(failed).toBeInstanceOf(OpenAI.InternalServerError);
      expect(failed.status).toBe(502);
      expect(failed.code).toBe('RETRY_EXHAUSTED');
      const id = failed.headers?.get('x-callboard-call-id');
      expect(await row(id!)).toMatchObject({ status: 'ERROR', errorCode: 'RETRY_EXHAUSTED', attemptCount: 3 });
    });

    it('refuses a body that is not JSON with 415 and one past MAX_BODY_BYTES with 413, in OpenAI shape', async () => {
      const form = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${masterKey}`, 'content-type': 'text/plain' }, body: '{}' });
      expect(form.status).toBe(415);
      expect(((await form.json()) as { error: { code: string } }).error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
      const huge = await fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${masterKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: user('x'.repeat(testApp.services.loaded.config.limits.maxBodyBytes)) }),
      });
      expect(huge.status).toBe(413);
      expect(((await huge.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
    });
  });
});
