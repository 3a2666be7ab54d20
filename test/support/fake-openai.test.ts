import OpenAI, { AzureOpenAI } from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  chatCompletion,
  chatCompletionChunks,
  contentPieces,
  defaultChatAnswer,
  defaultChatResponse,
  embeddingVector,
  startFakeOpenAI,
  tokenLogprobs,
  type FakeOpenAI,
} from './fake-openai.ts';

let fake: FakeOpenAI;
let openai: OpenAI;
let azure: AzureOpenAI;

beforeAll(async () => {
  fake = await startFakeOpenAI();
  openai = new OpenAI({ apiKey: 'sk-test', baseURL: fake.openaiBaseURL, maxRetries: 0, timeout: 2000 });
  azure = new AzureOpenAI({
    apiKey: 'az-key',
    endpoint: fake.azureEndpoint,
    apiVersion: '2023-05-15',
    deployment: 'my-deployment',
    maxRetries: 0,
    timeout: 2000,
  });
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => {
  fake.reset();
});

const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You are terse' },
  { role: 'user', content: 'hello there' },
];

describe('default chat', () => {
  it('echoes the last message through the OpenAI client and records the request', async () => {
    const { data: completion, response } = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages })
      .withResponse();

    expect(completion.object).toBe('chat.completion');
    expect(completion.id).toMatch(/^chatcmpl-/);
    expect(completion.model).toBe('gpt-4o-mini');
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'echo: hello there', refusal: null });
    expect(completion.choices[0]!.finish_reason).toBe('stop');
    expect(completion.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);

    expect(fake.requests).toHaveLength(1);
    const request = fake.requests[0]!;
    expect(request).toMatchObject({
      route: 'chat',
      flavor: 'openai',
      method: 'POST',
      path: '/v1/chat/completions',
      callNumber: 1,
      body: { model: 'gpt-4o-mini', messages },
    });
    expect(request.headers['authorization']).toBe('Bearer sk-test');
    expect(request.headers['content-type']).toContain('application/json');
    expect(request.deployment).toBeUndefined();
  });

  it('answers the Azure path with the deployment as model and records deployment and api-version', async () => {
    const completion = await azure.chat.completions.create({ model: 'gpt-4o-mini', messages });

    expect(completion.model).toBe('my-deployment');
    expect(completion.choices[0]!.message.content).toBe('echo: hello there');

    const [request] = fake.requestsTo('chat');
    expect(request).toMatchObject({
      route: 'chat',
      flavor: 'azure',
      path: '/openai/deployments/my-deployment/chat/completions',
      query: { 'api-version': '2023-05-15' },
      deployment: 'my-deployment',
      apiVersion: '2023-05-15',
      body: { model: 'gpt-4o-mini', messages },
    });
    expect(request!.headers['api-key']).toBe('az-key');
    expect(request!.headers['authorization']).toBeUndefined();
  });

  it('streams the echo as server-sent events when asked to', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    const finishReasons: string[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      content += chunk.choices[0]?.delta.content ?? '';
      if (chunk.choices[0]?.finish_reason) finishReasons.push(chunk.choices[0].finish_reason);
      if (chunk.usage) usage = chunk.usage;
    }

    expect(content).toBe('echo: hello there');
    expect(finishReasons).toEqual(['stop']);
    expect(usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
    expect(fake.requestsTo('chat')[0]!.body.stream).toBe(true);
  });
});

describe('default embeddings', () => {
  it('answers one deterministic vector per input of a batch', async () => {
    const response = await openai.embeddings.create({
      model: 'text-embedding-3-small',
      input: ['alpha', 'beta gamma', 'alpha'],
    });

    expect(response.object).toBe('list');
    expect(response.model).toBe('text-embedding-3-small');
    expect(response.data.map((item) => item.index)).toEqual([0, 1, 2]);
    for (const item of response.data) {
      expect(item.embedding).toHaveLength(8);
      for (const value of item.embedding) expect(Math.abs(value)).toBeLessThanOrEqual(1);
    }
    const [alpha, beta, alphaAgain] = response.data.map((item) => item.embedding);
    expect(alphaAgain).toEqual(alpha);
    expect(beta).not.toEqual(alpha);
    expect(alpha).toEqual(embeddingVector('alpha', 8));
    expect(response.usage).toEqual({ prompt_tokens: 4, total_tokens: 4 });

    const [request] = fake.requestsTo('embeddings');
    expect(request!.path).toBe('/v1/embeddings');
    expect(request!.body.input).toEqual(['alpha', 'beta gamma', 'alpha']);
    expect(request!.body.encoding_format).toBe('base64');
  });

  it('honours dimensions and a float encoding, giving the same values as base64', async () => {
    const float = await openai.embeddings.create({
      model: 'text-embedding-3-small',
      input: 'alpha',
      dimensions: 40,
      encoding_format: 'float',
    });
    const base64 = await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'alpha', dimensions: 40 });

    expect(float.data).toHaveLength(1);
    expect(float.data[0]!.embedding).toHaveLength(40);
    expect(base64.data[0]!.embedding).toEqual(float.data[0]!.embedding);
    expect(float.data[0]!.embedding.slice(0, 8)).toEqual(embeddingVector('alpha', 8));
  });

  it('uses defaultEmbeddingDimensions and the Azure deployment', async () => {
    const other = await startFakeOpenAI({ defaultEmbeddingDimensions: 3 });
    try {
      const client = new AzureOpenAI({
        apiKey: 'az-key',
        endpoint: other.azureEndpoint,
        apiVersion: '2024-10-21',
        deployment: 'embedder',
        maxRetries: 0,
        timeout: 2000,
      });
      const response = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'alpha' });

      expect(response.model).toBe('embedder');
      expect(response.data[0]!.embedding).toEqual(embeddingVector('alpha', 3));
      expect(other.requestsTo('embeddings')[0]).toMatchObject({
        path: '/openai/deployments/embedder/embeddings',
        deployment: 'embedder',
        apiVersion: '2024-10-21',
      });
    } finally {
      await other.close();
    }
  });
});

describe('scripts', () => {
  it('answers a list by call number, repeating the last one', async () => {
    fake.script('chat', [
      { error: { status: 429, message: 'Slow down' }, headers: { 'Retry-After': '2', 'X-Request-Id': 'req_limited' } },
      { json: chatCompletion({ content: 'finally', model: 'scripted-model' }) },
    ]);

    const error = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages }).catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect(error.status).toBe(429);
    expect(error.headers.get('retry-after')).toBe('2');
    expect(error.requestID).toBe('req_limited');
    expect(error.message).toBe('429 Slow down');
    expect(error.type).toBe('rate_limit_error');
    expect(error.param).toBeNull();

    const second = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(second.choices[0]!.message.content).toBe('finally');
    expect(second.model).toBe('scripted-model');
    const third = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(third.choices[0]!.message.content).toBe('finally');

    expect(fake.requestsTo('chat').map((request) => request.callNumber)).toEqual([1, 2, 3]);
  });

  it('starts a list at its first item when it is scripted, whatever came before', async () => {
    await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    fake.script('chat', [{ json: chatCompletion({ content: 'first', model: 'm' }) }, { json: chatCompletion({ content: 'second', model: 'm' }) }]);

    const first = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(first.choices[0]!.message.content).toBe('first');
    fake.script('chat', [{ json: chatCompletion({ content: 'again first', model: 'm' }) }, { json: chatCompletion({ content: 'again second', model: 'm' }) }]);
    const again = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(again.choices[0]!.message.content).toBe('again first');
    const next = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(next.choices[0]!.message.content).toBe('again second');
    expect(fake.requestsTo('chat').map((request) => request.callNumber)).toEqual([1, 2, 3, 4, 5]);
  });

  it('scripts one route without touching the other', async () => {
    fake.script('chat', { error: { status: 503, message: 'Overloaded', code: 'overloaded' } });

    const error = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages }).catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.InternalServerError);
    expect(error.status).toBe(503);
    expect(error.code).toBe('overloaded');

    const embeddings = await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'still fine' });
    expect(embeddings.data).toHaveLength(1);
  });

  it('calls a function handler with the recorded request', async () => {
    fake.script('chat', async (request) => ({
      json: chatCompletion({
        content: `call ${request.callNumber} with ${request.body.messages.length} messages`,
        model: request.body.model,
        usage: { prompt_tokens: 11, completion_tokens: 7 },
        finishReason: 'length',
      }),
    }));

    await openai.chat.completions.create({ model: 'gpt-4o', messages });
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages: messages.slice(1) });

    expect(completion.choices[0]!.message.content).toBe('call 2 with 1 messages');
    expect(completion.choices[0]!.finish_reason).toBe('length');
    expect(completion.usage).toMatchObject({ prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
  });

  it('answers 500 when a function handler throws', async () => {
    fake.script('chat', () => {
      throw new Error('boom');
    });

    const error = await openai.chat.completions.create({ model: 'gpt-4o', messages }).catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.InternalServerError);
    expect(error.status).toBe(500);
    expect(error.message).toContain('boom');
  });

  it('streams scripted server-sent events', async () => {
    fake.script('chat', { sse: chatCompletionChunks({ content: 'one two three', model: 'streamer' }) });

    const stream = await openai.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
    const pieces: string[] = [];
    for await (const chunk of stream) {
      expect(chunk.model).toBe('streamer');
      const piece = chunk.choices[0]?.delta.content;
      if (piece) pieces.push(piece);
    }

    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.join('')).toBe('one two three');
  });

  it('waits delayMs before answering', async () => {
    fake.script('chat', { json: chatCompletion({ content: 'late', model: 'slow' }), delayMs: 150 });

    const started = Date.now();
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(completion.choices[0]!.message.content).toBe('late');
  });

  it('hangs until the SDK times out', async () => {
    fake.script('chat', { hang: true });
    const impatient = new OpenAI({ apiKey: 'sk-test', baseURL: fake.openaiBaseURL, maxRetries: 0, timeout: 200 });

    const started = Date.now();
    const error = await impatient.chat.completions.create({ model: 'gpt-4o', messages }).catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(Date.now() - started).toBeLessThan(1500);
    expect(fake.requestsTo('chat')).toHaveLength(1);
  });

  it('resets the connection, which the SDK reports as a connection error', async () => {
    fake.script('chat', { reset: true });
    const error = await openai.chat.completions.create({ model: 'gpt-4o', messages }).catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.APIConnectionError);
    expect(error).not.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(fake.requestsTo('chat')).toHaveLength(1);
  });
});

describe('rejections', () => {
  it('answers 401 without a bearer token, and records the request', async () => {
    const response = await fetch(`${fake.openaiBaseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages }),
    });

    expect(response.status).toBe(401);
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    const body = await response.json();
    expect(body).toEqual({
      error: { message: expect.any(String), type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
    });
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]).toMatchObject({ route: 'chat', flavor: 'openai', callNumber: 1 });
  });

  it('answers 401 on Azure without api-key, and 400 without api-version', async () => {
    const path = `${fake.azureEndpoint}/openai/deployments/my-deployment/chat/completions`;
    const body = JSON.stringify({ messages });

    const withoutKey = await fetch(`${path}?api-version=2023-05-15`, { method: 'POST', body });
    expect(withoutKey.status).toBe(401);

    const withoutVersion = await fetch(path, { method: 'POST', headers: { 'api-key': 'az-key' }, body });
    expect(withoutVersion.status).toBe(400);
    expect((await withoutVersion.json()).error.message).toContain('api-version');

    const withBearer = await fetch(`${path}?api-version=2023-05-15`, {
      method: 'POST',
      headers: { authorization: 'Bearer entra-token' },
      body,
    });
    expect(withBearer.status).toBe(200);

    expect(fake.requestsTo('chat').map((request) => request.callNumber)).toEqual([1, 2, 3]);
  });

  it('answers 404 for anything else, through the SDK too', async () => {
    const response = await fetch(`${fake.openaiBaseURL}/models`, { headers: { authorization: 'Bearer sk-test' } });
    expect(response.status).toBe(404);
    expect((await response.json()).error.message).toBe('Invalid URL (GET /v1/models)');

    const error = await openai.models.list().catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect(fake.requests.map((request) => request.route)).toEqual(['unknown', 'unknown']);
    expect(fake.requestsTo('chat')).toHaveLength(0);
  });
});

describe('lifecycle', () => {
  it('reset clears requests, call numbers and scripts', async () => {
    fake.script('chat', { error: { status: 500 } });
    await openai.chat.completions.create({ model: 'gpt-4o', messages }).catch(() => undefined);
    expect(fake.requests).toHaveLength(1);

    fake.reset();
    expect(fake.requests).toHaveLength(0);

    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages });
    expect(completion.choices[0]!.message.content).toBe('echo: hello there');
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]!.callNumber).toBe(1);
  });

  it('closes promptly while a request hangs', async () => {
    const other = await startFakeOpenAI();
    other.script('chat', { hang: true });
    const hanging = fetch(`${other.openaiBaseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-test' },
      body: JSON.stringify({ model: 'gpt-4o', messages }),
    }).then(
      () => 'answered',
      () => 'failed',
    );
    await expect.poll(() => other.requests.length).toBe(1);

    const started = Date.now();
    await other.close();
    expect(Date.now() - started).toBeLessThan(500);
    expect(await hanging).toBe('failed');
  });
});

const tools: OpenAI.Chat.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'search', parameters: { type: 'object', properties: { query: { type: 'string' } } } } },
  { type: 'function', function: { name: 'weather', parameters: { type: 'object', properties: { query: { type: 'string' } } } } },
];

/** Every chunk of an SDK stream, in order. */
async function collect(stream: AsyncIterable<OpenAI.ChatCompletionChunk>): Promise<OpenAI.ChatCompletionChunk[]> {
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

/** One delta field of one choice, over the chunks that carry it. */
function deltas(chunks: OpenAI.ChatCompletionChunk[], field: 'content' | 'reasoning_content', index = 0): string[] {
  return chunks.flatMap((chunk) =>
    chunk.choices
      .filter((choice) => choice.index === index)
      .map((choice) => (choice.delta as Record<string, unknown>)[field])
      .filter((value): value is string => typeof value === 'string' && value.length > 0),
  );
}

describe('default chat streams', () => {
  it('streams role first, one content delta per word, the finish reason, then usage; usage is null on the other chunks', async () => {
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'tell me three words' }] };
    const chunks = await collect(
      await openai.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } }),
    );

    expect(new Set(chunks.map((chunk) => chunk.id)).size).toBe(1);
    expect(chunks[0]!.choices[0]!.delta).toMatchObject({ role: 'assistant', content: '' });
    expect(deltas(chunks, 'content')).toEqual(['echo: ', 'tell ', 'me ', 'three ', 'words']);
    expect(deltas(chunks, 'content')).toEqual(contentPieces(defaultChatAnswer(body).choices[0]!.content));
    const finishChunk = chunks[chunks.length - 2]!;
    expect(finishChunk.choices[0]).toMatchObject({ index: 0, delta: {}, finish_reason: 'stop' });
    expect(chunks.slice(0, -2).every((chunk) => chunk.choices[0]!.finish_reason === null)).toBe(true);
    const usageChunk = chunks[chunks.length - 1]!;
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 5, total_tokens: 9 });
    expect(chunks.slice(0, -1).map((chunk) => chunk.usage)).toEqual(chunks.slice(0, -1).map(() => null));
  });

  it('has no usage chunk and no usage field without include_usage', async () => {
    const chunks = await collect(await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true }));

    expect(chunks[chunks.length - 1]!.choices[0]!.finish_reason).toBe('stop');
    expect(chunks.every((chunk) => !('usage' in chunk))).toBe(true);
  });

  it('answers text/event-stream with one data line per chunk and a final [DONE]', async () => {
    const response = await fetch(`${fake.openaiBaseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-test', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages, stream: true }),
    });

    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const events = (await response.text()).split('\n\n');
    expect(events.pop()).toBe('');
    expect(events.pop()).toBe('data: [DONE]');
    for (const event of events) expect(JSON.parse(event.replace(/^data: /, '')).object).toBe('chat.completion.chunk');
    expect(events).toHaveLength(contentPieces('echo: hello there').length + 2);
  });

  it('waits x-fake-chunk-delay-ms between chunks', async () => {
    const stream = await openai.chat.completions.create(
      { model: 'gpt-4o-mini', messages, stream: true },
      { headers: { 'x-fake-chunk-delay-ms': '60' } },
    );
    const arrivals: number[] = [];
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) arrivals.push(Date.now());
    }

    expect(arrivals).toHaveLength(3);
    // A lower bound only: each content chunk was written at least one pause after the one before.
    for (let position = 1; position < arrivals.length; position++) {
      expect(arrivals[position]! - arrivals[position - 1]!).toBeGreaterThanOrEqual(50);
    }
    expect(fake.requestsTo('chat')[0]!.headers['x-fake-chunk-delay-ms']).toBe('60');
  });
});

describe('default chat: n, logprobs, reasoning, image parts', () => {
  it('answers n distinct choices, without and with streaming', async () => {
    const body = { model: 'gpt-4o-mini', messages, n: 3 };
    const completion = await openai.chat.completions.create(body);

    const texts = ['echo: hello there', 'echo: hello there (choice 1)', 'echo: hello there (choice 2)'];
    expect(completion.choices.map((choice) => [choice.index, choice.message.content, choice.finish_reason])).toEqual(
      texts.map((text, index) => [index, text, 'stop']),
    );
    expect(defaultChatAnswer(body).choices.map((choice) => choice.content)).toEqual(texts);
    expect(completion.usage!.completion_tokens).toBe(3 + 5 + 5);

    const chunks = await collect(await openai.chat.completions.create({ ...body, stream: true }));
    expect(chunks.every((chunk) => chunk.choices.length === 1)).toBe(true);
    expect([0, 1, 2].map((index) => deltas(chunks, 'content', index).join(''))).toEqual(texts);
    expect([0, 1, 2].map((index) => deltas(chunks, 'content', index).length)).toEqual([3, 5, 5]);
    const finished = chunks.flatMap((chunk) => chunk.choices.filter((choice) => choice.finish_reason !== null));
    expect(finished.map((choice) => [choice.index, choice.finish_reason])).toEqual([[0, 'stop'], [1, 'stop'], [2, 'stop']]);
  });

  it('adds logprobs per word, with the top_logprobs asked for, and none unless asked', async () => {
    const completion = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, logprobs: true, top_logprobs: 2 });

    const logprobs = completion.choices[0]!.logprobs!;
    expect(logprobs.refusal).toBeNull();
    expect(logprobs.content!.map((entry) => entry.token)).toEqual(['echo: ', 'hello ', 'there']);
    expect(logprobs.content).toEqual(tokenLogprobs('echo: hello there', 2));
    for (const entry of logprobs.content!) {
      expect(entry.logprob).toBeLessThan(0);
      expect(entry.bytes).toEqual([...Buffer.from(entry.token)]);
      expect(entry.top_logprobs).toHaveLength(2);
      expect(entry.top_logprobs[0]).toMatchObject({ token: entry.token, logprob: entry.logprob });
      expect(entry.top_logprobs[1]!.logprob).toBeLessThan(entry.logprob);
    }

    const withoutTop = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, logprobs: true });
    expect(withoutTop.choices[0]!.logprobs!.content!.map((entry) => entry.top_logprobs)).toEqual([[], [], []]);
    const without = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(without.choices[0]!.logprobs).toBeNull();
  });

  it('streams each content chunk with its own logprobs', async () => {
    const chunks = await collect(
      await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, logprobs: true, top_logprobs: 1, stream: true }),
    );

    const contentChunks = chunks.filter((chunk) => chunk.choices[0]?.delta.content);
    expect(contentChunks).toHaveLength(3);
    for (const chunk of contentChunks) {
      const choice = chunk.choices[0]!;
      expect(choice.logprobs!.content).toHaveLength(1);
      expect(choice.logprobs!.content![0]!.token).toBe(choice.delta.content);
      expect(choice.logprobs!.content![0]!.top_logprobs).toHaveLength(1);
    }
    expect(contentChunks.flatMap((chunk) => chunk.choices[0]!.logprobs!.content)).toEqual(tokenLogprobs('echo: hello there', 1));
  });

  it('gives a model named like a reasoner reasoning_content, on the message and as deltas before the content', async () => {
    const body = { model: 'fake-reasoner', messages };
    const completion = await openai.chat.completions.create(body);

    const message = completion.choices[0]!.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string };
    expect(message.reasoning_content).toBe('Thinking about "hello there" first.');
    expect(message.content).toBe('echo: hello there');
    expect(completion.usage!.completion_tokens_details!.reasoning_tokens).toBe(5);
    expect(completion.usage!.completion_tokens).toBe(5 + 3);

    const chunks = await collect(await openai.chat.completions.create({ ...body, stream: true }));
    const reasoning = deltas(chunks, 'reasoning_content');
    expect(reasoning.length).toBeGreaterThan(1);
    expect(reasoning.join('')).toBe(defaultChatAnswer(body).choices[0]!.reasoning);
    const lastReasoning = chunks.findLastIndex((chunk) => 'reasoning_content' in chunk.choices[0]!.delta);
    const firstContent = chunks.findIndex((chunk) => chunk.choices[0]?.delta.content);
    expect(lastReasoning).toBeLessThan(firstContent);
    expect(deltas(chunks, 'content').join('')).toBe('echo: hello there');

    const plain = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(plain.choices[0]!.message).not.toHaveProperty('reasoning_content');
  });

  it('reads the text parts of a message and counts its image parts', async () => {
    const image = (url: string) => ({ type: 'image_url' as const, image_url: { url } });
    const one = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'what is' }, image('data:image/png;base64,AAAA'), { type: 'text', text: 'this?' }] }],
    });
    expect(one.choices[0]!.message.content).toBe('echo: what is this? [1 image]');
    expect(one.usage!.prompt_tokens).toBe(3);

    const two = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: [image('https://example.com/a.png'), image('https://example.com/b.png')] }],
    });
    expect(two.choices[0]!.message.content).toBe('echo: [2 images]');
    expect(fake.requestsTo('chat')[1]!.body.messages[0].content[1]).toEqual(image('https://example.com/b.png'));
  });

  it('records seed, user and unknown fields as sent', async () => {
    await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      seed: 7,
      user: 'user-1',
      // A field OpenAI does not know, as a compatible upstream may accept.
      ...({ top_k: 5 } as object),
    });

    expect(fake.requestsTo('chat')[0]!.body).toMatchObject({ seed: 7, user: 'user-1', top_k: 5 });
  });

  it('refuses n and top_logprobs out of range, and a tool_choice naming no tool, with 400', async () => {
    const refusals = await Promise.all([
      openai.chat.completions.create({ model: 'gpt-4o-mini', messages, n: 0 }).catch((caught) => caught),
      openai.chat.completions.create({ model: 'gpt-4o-mini', messages, n: 129 }).catch((caught) => caught),
      openai.chat.completions.create({ model: 'gpt-4o-mini', messages, logprobs: true, top_logprobs: 21 }).catch((caught) => caught),
      openai.chat.completions
        .create({ model: 'gpt-4o-mini', messages, tools, tool_choice: { type: 'function', function: { name: 'nope' } } })
        .catch((caught) => caught),
    ]);

    for (const refusal of refusals) {
      expect(refusal).toBeInstanceOf(OpenAI.BadRequestError);
      expect(refusal.code).toBe('invalid_value');
    }
    expect(refusals.map((refusal) => refusal.message)).toEqual([
      expect.stringContaining("'n'"),
      expect.stringContaining("'n'"),
      expect.stringContaining("'top_logprobs'"),
      expect.stringContaining("'nope'"),
    ]);
  });
});

describe('default chat: tools', () => {
  const ask = (text: string): OpenAI.Chat.ChatCompletionMessageParam[] => [{ role: 'user', content: text }];

  it('calls the first two tools in parallel, with the user text as query, content null and finish_reason tool_calls', async () => {
    const completion = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: ask('rain in Paris'), tools });

    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const calls = choice.message.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[];
    expect(calls.map((call) => [call.type, call.function.name, JSON.parse(call.function.arguments)])).toEqual([
      ['function', 'search', { query: 'rain in Paris' }],
      ['function', 'weather', { query: 'rain in Paris' }],
    ]);
    expect(new Set(calls.map((call) => call.id)).size).toBe(2);
    expect(calls.map((call) => call.id)).toEqual(
      defaultChatAnswer({ model: 'gpt-4o-mini', messages: ask('rain in Paris'), tools }).choices[0]!.toolCalls!.map((call) => call.id),
    );
  });

  it('calls one tool without parallel_tool_calls, the named one for a named tool_choice, none for tool_choice none', async () => {
    const single = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: ask('hi'), tools, parallel_tool_calls: false });
    expect(single.choices[0]!.message.tool_calls!.map((call) => (call as OpenAI.ChatCompletionMessageFunctionToolCall).function.name)).toEqual(['search']);

    const named = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: ask('hi'),
      tools,
      tool_choice: { type: 'function', function: { name: 'weather' } },
    });
    expect(named.choices[0]!.message.tool_calls!.map((call) => (call as OpenAI.ChatCompletionMessageFunctionToolCall).function.name)).toEqual(['weather']);

    const none = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: ask('hi'), tools, tool_choice: 'none' });
    expect(none.choices[0]!.message).toMatchObject({ content: 'echo: hi' });
    expect(none.choices[0]!.message.tool_calls).toBeUndefined();
    expect(none.choices[0]!.finish_reason).toBe('stop');
  });

  it('answers the tool results of a round trip, quoting each with its tool_call_id', async () => {
    const first = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: ask('rain in Paris'), tools });
    const assistant = first.choices[0]!.message;
    const [search, weather] = assistant.tool_calls!;

    const second = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      tools,
      messages: [
        ...ask('rain in Paris'),
        { role: 'assistant', content: null, tool_calls: assistant.tool_calls },
        { role: 'tool', tool_call_id: search!.id, content: 'three articles' },
        { role: 'tool', tool_call_id: weather!.id, content: [{ type: 'text', text: 'light rain' }] },
      ],
    });

    expect(second.choices[0]!.finish_reason).toBe('stop');
    expect(second.choices[0]!.message.content).toBe(
      `echo: tool ${search!.id} answered three articles; tool ${weather!.id} answered light rain`,
    );
  });

  it('streams tool calls as OpenAI does: id, type and name first, then the arguments in pieces', async () => {
    const body = { model: 'gpt-4o-mini', messages: ask('rain in Paris'), tools, n: 2 };
    const chunks = await collect(await openai.chat.completions.create({ ...body, stream: true }));

    for (const index of [0, 1]) {
      const callDeltas = chunks.flatMap((chunk) =>
        chunk.choices.filter((choice) => choice.index === index).flatMap((choice) => choice.delta.tool_calls ?? []),
      );
      for (const callIndex of [0, 1]) {
        const [head, ...pieces] = callDeltas.filter((delta) => delta.index === callIndex);
        expect(head).toMatchObject({
          index: callIndex,
          id: expect.stringMatching(/^call_/),
          type: 'function',
          function: { name: ['search', 'weather'][callIndex], arguments: '' },
        });
        expect(pieces.length).toBeGreaterThanOrEqual(2);
        for (const piece of pieces) expect(Object.keys(piece).sort()).toEqual(['function', 'index']);
        const expected = defaultChatAnswer(body).choices[index]!.toolCalls![callIndex]!;
        expect(pieces.map((piece) => piece.function!.arguments).join('')).toBe(expected.arguments);
      }
    }
    const finished = chunks.flatMap((chunk) => chunk.choices.filter((choice) => choice.finish_reason !== null));
    expect(finished.map((choice) => choice.finish_reason)).toEqual(['tool_calls', 'tool_calls']);

    // The SDK's own accumulation gives back the answer the fake gives without streaming.
    const runner = openai.chat.completions.stream({ ...body });
    const streamed = await runner.finalChatCompletion();
    const whole = await openai.chat.completions.create(body);
    expect(streamed.choices.map((choice) => choice.message.tool_calls)).toEqual(whole.choices.map((choice) => choice.message.tool_calls));
    expect(JSON.parse((whole.choices[1]!.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments)).toEqual({
      query: 'rain in Paris (choice 1)',
    });
  });
});

describe('default chat: a stream is the whole answer in pieces', () => {
  it("the SDK's own assembly of a stream of n=2 with logprobs gives back every choice and the usage of the answer given whole", async () => {
    const body = { model: 'gpt-4o-mini', messages, n: 2, logprobs: true, top_logprobs: 2 };
    const whole = await openai.chat.completions.create(body);
    const streamed = await openai.chat.completions.stream({ ...body, stream_options: { include_usage: true } }).finalChatCompletion();
    // Only the envelope (each answer its own id) and the SDK's own `parsed` differ.
    const choices = streamed.choices.map(({ message: { parsed: _parsed, ...message }, ...choice }) => ({ ...choice, message: { ...message, annotations: [] } }));
    expect(choices).toEqual(whole.choices);
    expect(streamed.usage).toEqual(whole.usage);
  });
});

describe('scripted streams', () => {
  it('sseCut sends its events then breaks the connection without [DONE]: the SDK iteration throws', async () => {
    fake.script('chat', { sseCut: chatCompletionChunks({ content: 'one two three', model: 'm' }).slice(0, 3) });

    const stream = await openai.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
    const pieces: string[] = [];
    const error = await (async () => {
      for await (const chunk of stream) pieces.push(chunk.choices[0]?.delta.content ?? '');
    })().then(
      () => undefined,
      (caught: unknown) => caught,
    );

    expect(error).toBeInstanceOf(Error);
    expect(pieces.join('')).toBe('one two ');
    // The fake broke the stream, not the client.
    expect(fake.streamsAborted).toBe(0);
  });

  it('waits sseDelayMs between scripted events, and a script can wrap the default answer', async () => {
    fake.script('chat', (request) => ({ ...(defaultChatResponse(request) as { sse: unknown[] }), sseDelayMs: 60 }));

    const stream = await openai.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
    const arrivals: number[] = [];
    let content = '';
    for await (const chunk of stream) {
      arrivals.push(Date.now());
      content += chunk.choices[0]?.delta.content ?? '';
    }

    expect(content).toBe('echo: hello there');
    expect(arrivals).toHaveLength(5);
    // A lower bound only: four pauses between five events.
    expect(arrivals[4]! - arrivals[0]!).toBeGreaterThanOrEqual(4 * 50);
  });

  it('counts a stream whose client went away before its end in streamsAborted, and not one read to its end', async () => {
    const body = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'a long answer of many words to stream slowly' }], stream: true as const };
    await collect(await openai.chat.completions.create(body, { headers: { 'x-fake-chunk-delay-ms': '30' } }));
    expect(fake.streamsAborted).toBe(0);

    const stream = await openai.chat.completions.create(body, { headers: { 'x-fake-chunk-delay-ms': '200' } });
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) break;
    }
    await expect.poll(() => fake.streamsAborted).toBe(1);

    const aborter = new AbortController();
    const aborted = await openai.chat.completions.create(body, { headers: { 'x-fake-chunk-delay-ms': '200' }, signal: aborter.signal });
    const iterator = aborted[Symbol.asyncIterator]();
    await iterator.next();
    aborter.abort();
    await expect.poll(() => fake.streamsAborted).toBe(2);

    fake.reset();
    expect(fake.streamsAborted).toBe(0);
  });
});
