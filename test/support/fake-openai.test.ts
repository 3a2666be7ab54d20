import OpenAI, { AzureOpenAI } from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  chatCompletion,
  chatCompletionChunks,
  embeddingVector,
  startFakeOpenAI,
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
