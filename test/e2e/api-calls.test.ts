import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { graphql } from '../gql/index.ts';
import { createTestApp, testConfig, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { embeddingVector, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

const apiKey = 'sk-e2e-SECRET-42';
const systemTemplate = 'You are {{name}}, who likes {{{likes}}}.\n';
const userTemplate = 'Tell me about {{topic}}.';
const prices = '[Prices]\ngpt-4o-mini=0.15, 0.60\ntext-embedding-3-small=0.02, 0\n';

const SendMessageMutation = graphql(`
  mutation ApiCallsSendMessage($input: SendMessageInput!) {
    sendMessage(input: $input) {
      message {
        role
        content
        refusal
      }
      finishReason
      model
      usage {
        promptTokens
        completionTokens
        totalTokens
      }
      cacheStatus
      attempts
      latencyMs
      call {
        id
        kind
        apiType
        model
        status
        cacheStatus
        cacheKey
        errorCode
        attemptCount
        latencyMs
        costUsd
        tags
        metadata
        templateName
        templateHash
        requestBody
        attempts {
          number
          httpStatus
          errorCode
          waitMs
          requestId
          latencyMs
        }
      }
    }
  }
`);

const SendTemplatedMessageMutation = graphql(`
  mutation ApiCallsSendTemplatedMessage($input: SendTemplatedMessageInput!) {
    sendTemplatedMessage(input: $input) {
      message {
        content
      }
      model
      cacheStatus
      call {
        id
        templateName
        templateHash
        tags
      }
    }
  }
`);

const CallQuery = graphql(`
  query ApiCallsCall($id: ID!) {
    call(id: $id) {
      id
      kind
      apiType
      model
      status
      cacheStatus
      attemptCount
      costUsd
      tags
      metadata
      templateName
      templateHash
      estimatedPromptTokens
      usage {
        promptTokens
        completionTokens
        totalTokens
      }
      attempts {
        number
        httpStatus
        errorCode
        requestId
      }
    }
  }
`);

const EmbeddingQuery = graphql(`
  query ApiCallsEmbedding($text: String!, $cache: CacheMode, $tags: [String!]) {
    embedding(text: $text, cache: $cache, tags: $tags) {
      vector
      dimensions
      model
      cacheStatus
      usage {
        promptTokens
        completionTokens
        totalTokens
      }
      call {
        id
        kind
        model
        cacheStatus
        cacheKey
        attemptCount
        costUsd
        tags
      }
    }
  }
`);

const EmbeddingsQuery = graphql(`
  query ApiCallsEmbeddings($texts: [String!]!, $cache: CacheMode) {
    embeddings(texts: $texts, cache: $cache) {
      vector
      dimensions
      model
      cacheStatus
      usage {
        promptTokens
        totalTokens
      }
      call {
        id
        kind
        cacheStatus
        cacheKey
        attemptCount
      }
    }
  }
`);

const TokenCountQuery = graphql(`
  query ApiCallsTokenCount($model: String, $text: String, $messages: [ChatMessageInput!]) {
    tokenCount(model: $model, text: $text, messages: $messages) {
      tokens
      model
      encoding
      fallback
    }
  }
`);

function dataOf<T>(result: GraphQLResponse<T>): T {
  expect(result.errors).toBeUndefined();
  return result.data!;
}

describe.each(databaseKinds)('calls to models through the API on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let promptsDir: string;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    promptsDir = await mkdtemp(path.join(tmpdir(), 'callboard-prompts-'));
    await writeFile(path.join(promptsDir, 'persona.system.mustache'), systemTemplate);
    await writeFile(path.join(promptsDir, 'question.user.mustache'), userTemplate);
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n[Prompts]\nDIR=${promptsDir}\n${prices}`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: apiKey }));
  });
  afterAll(async () => {
    await testApp?.dispose();
    await fake?.close();
    if (promptsDir) await rm(promptsDir, { recursive: true, force: true });
  });
  beforeEach(() => fake.reset());

  it('sendMessage answers with the message, usage, cache status, attempts and its history row', async () => {
    const result = await testApp.execute(SendMessageMutation, {
      input: {
        messages: [
          { role: 'SYSTEM', content: 'Be brief.' },
          { role: 'USER', content: 'Say hello to the world', name: 'tester' },
        ],
        temperature: 0.2,
        tags: ['e2e', 'greeting'],
        metadata: { ticket: 42 },
      },
    });
    const payload = dataOf(result).sendMessage;

    const sent = { model: 'gpt-4o-mini', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello to the world', name: 'tester' }] };
    expect(fake.requestsTo('chat')).toHaveLength(1);
    const upstream = fake.requestsTo('chat')[0]!;
    expect(upstream.headers.authorization).toBe(`Bearer ${apiKey}`);
    expect(upstream.body).toMatchObject({ ...sent, temperature: 0.2, max_tokens: 4000, frequency_penalty: 0, presence_penalty: 0 });
    expect(upstream.body).not.toHaveProperty('top_p');

    // The fake counts one token per word: 2 + 5 prompt words, 6 words in "echo: Say hello to the world".
    expect(payload).toMatchObject({
      message: { role: 'ASSISTANT', content: 'echo: Say hello to the world', refusal: null },
      finishReason: 'stop',
      model: 'gpt-4o-mini',
      usage: { promptTokens: 7, completionTokens: 6, totalTokens: 13 },
      cacheStatus: 'BYPASS',
      attempts: 1,
    });
    expect(payload.latencyMs).toBeGreaterThan(0);
    expect(payload.call).toMatchObject({
      kind: 'CHAT',
      apiType: 'openai',
      model: 'gpt-4o-mini',
      status: 'SUCCESS',
      cacheStatus: 'BYPASS',
      cacheKey: null,
      errorCode: null,
      attemptCount: 1,
      latencyMs: payload.latencyMs,
      tags: ['e2e', 'greeting'],
      metadata: { ticket: 42 },
      templateName: null,
      requestBody: { ...sent, temperature: 0.2, max_tokens: 4000 },
    });
    // gpt-4o-mini costs 0.15 and 0.60 USD per million prompt and completion tokens.
    // Exactly 7 x 0.15 + 6 x 0.60 per million: a decimal string.
    expect(payload.call.costUsd).toBe('0.00000465');
    expect(payload.call.attempts).toEqual([
      { number: 1, httpStatus: 200, errorCode: null, waitMs: null, requestId: expect.stringMatching(/^req_/), latencyMs: expect.any(Number) },
    ]);

    await testApp.services.history.flush();
    const stored = dataOf(await testApp.execute(CallQuery, { id: payload.call.id })).call;
    expect(stored).toMatchObject({
      id: payload.call.id,
      status: 'SUCCESS',
      cacheStatus: 'BYPASS',
      attemptCount: 1,
      costUsd: payload.call.costUsd,
      tags: ['e2e', 'greeting'],
      metadata: { ticket: 42 },
      usage: { promptTokens: 7, completionTokens: 6, totalTokens: 13 },
      attempts: [{ number: 1, httpStatus: 200, errorCode: null, requestId: payload.call.attempts[0]!.requestId }],
    });
    expect(stored!.estimatedPromptTokens).toBeGreaterThan(0);
  });

  it('sendTemplatedMessage renders the templates with chevron escaping and records their name and hash', async () => {
    const result = await testApp.execute(SendTemplatedMessageMutation, {
      input: {
        systemTemplateName: 'persona.system.mustache',
        userTemplateName: 'question.user.mustache',
        variables: { name: 'Ada & <Bob>', likes: '<b>bold</b>', topic: `O'Neil "the great"` },
        model: 'gpt-4o',
        tags: ['templated'],
      },
    });
    const payload = dataOf(result).sendTemplatedMessage;

    const expectedSystem = 'You are Ada &amp; &lt;Bob&gt;, who likes <b>bold</b>.\n';
    const expectedUser = `Tell me about O'Neil &quot;the great&quot;.`;
    expect(fake.requestsTo('chat')[0]!.body.messages).toEqual([
      { role: 'system', content: expectedSystem },
      { role: 'user', content: expectedUser },
    ]);
    expect(payload).toMatchObject({ message: { content: `echo: ${expectedUser}` }, model: 'gpt-4o', cacheStatus: 'BYPASS' });
    const hash = createHash('sha256').update(`${systemTemplate}\u0000${userTemplate}`).digest('hex');
    expect(payload.call).toMatchObject({ templateName: 'persona.system.mustache+question.user.mustache', templateHash: hash, tags: ['templated'] });

    await testApp.services.history.flush();
    const stored = dataOf(await testApp.execute(CallQuery, { id: payload.call.id })).call;
    expect(stored).toMatchObject({ templateName: 'persona.system.mustache+question.user.mustache', templateHash: hash, model: 'gpt-4o' });
  });

  it('sendTemplatedMessage sends a plain system prompt as given, without a template', async () => {
    const result = await testApp.execute(SendTemplatedMessageMutation, {
      input: { systemPrompt: 'Literal {{braces}} stay', userTemplateName: 'question.user.mustache', variables: { topic: 'tea' } },
    });
    const payload = dataOf(result).sendTemplatedMessage;
    expect(fake.requestsTo('chat')[0]!.body.messages).toEqual([
      { role: 'system', content: 'Literal {{braces}} stay' },
      { role: 'user', content: 'Tell me about tea.' },
    ]);
    expect(payload.call.templateName).toBe('question.user.mustache');
  });

  it('embedding answers the vector of one text, with usage, cost and its history row', async () => {
    const result = await testApp.execute(EmbeddingQuery, { text: 'the quick brown fox', tags: ['vectors'] });
    const embedding = dataOf(result).embedding;

    expect(fake.requestsTo('embeddings')).toHaveLength(1);
    expect(fake.requestsTo('embeddings')[0]!.body).toMatchObject({ model: 'text-embedding-3-small', input: ['the quick brown fox'] });
    expect(embedding).toMatchObject({
      vector: embeddingVector('the quick brown fox', 8),
      dimensions: 8,
      model: 'text-embedding-3-small',
      cacheStatus: 'BYPASS',
      usage: { promptTokens: 4, completionTokens: 0, totalTokens: 4 },
      call: { kind: 'EMBEDDING', model: 'text-embedding-3-small', cacheStatus: 'BYPASS', attemptCount: 1, tags: ['vectors'] },
    });
    // text-embedding-3-small costs 0.02 USD per million tokens.
    expect(embedding.call.costUsd).toBe('0.00000008');

    await testApp.services.history.flush();
    const stored = dataOf(await testApp.execute(CallQuery, { id: embedding.call.id })).call;
    expect(stored).toMatchObject({ kind: 'EMBEDDING', status: 'SUCCESS', usage: { promptTokens: 4, completionTokens: 0, totalTokens: 4 } });
  });

  it('embeddings sends only the texts not in the cache, once each, and answers in the order given', async () => {
    const first = dataOf(await testApp.execute(EmbeddingsQuery, { texts: ['alpha one', 'beta', 'alpha one'], cache: 'USE' })).embeddings;
    expect(fake.requestsTo('embeddings').map((request) => request.body.input)).toEqual([['alpha one', 'beta']]);
    expect(first.map((embedding) => embedding.vector)).toEqual([
      embeddingVector('alpha one', 8),
      embeddingVector('beta', 8),
      embeddingVector('alpha one', 8),
    ]);
    expect(first.map((embedding) => embedding.cacheStatus)).toEqual(['MISS', 'MISS', 'MISS']);
    expect(first[0]!.usage).toEqual({ promptTokens: 3, totalTokens: 3 });
    expect(new Set(first.map((embedding) => embedding.call.id)).size).toBe(1);
    expect(first[0]!.call).toMatchObject({ kind: 'EMBEDDING', cacheStatus: 'MISS', cacheKey: null, attemptCount: 1 });

    const second = dataOf(await testApp.execute(EmbeddingsQuery, { texts: ['beta', 'gamma ray'], cache: 'USE' })).embeddings;
    expect(fake.requestsTo('embeddings').map((request) => request.body.input)).toEqual([['alpha one', 'beta'], ['gamma ray']]);
    expect(second.map((embedding) => [embedding.cacheStatus, embedding.vector])).toEqual([
      ['HIT', embeddingVector('beta', 8)],
      ['MISS', embeddingVector('gamma ray', 8)],
    ]);

    const hit = dataOf(await testApp.execute(EmbeddingQuery, { text: 'beta', cache: 'USE' })).embedding;
    expect(fake.requestsTo('embeddings')).toHaveLength(2);
    expect(hit).toMatchObject({ vector: embeddingVector('beta', 8), cacheStatus: 'HIT', call: { cacheStatus: 'HIT', attemptCount: 0 } });
    expect(hit.call.cacheKey).toMatch(/^[0-9a-f]{64}$/);
  });

  it('tokenCount counts with the configured MODEL unless told otherwise', async () => {
    expect(dataOf(await testApp.execute(TokenCountQuery, { text: 'hello world' })).tokenCount).toEqual({
      tokens: 2,
      model: 'gpt-4o-mini',
      encoding: 'o200k_base',
      fallback: false,
    });
    const messages = [{ role: 'USER' as const, content: 'hello world' }];
    expect(dataOf(await testApp.execute(TokenCountQuery, { model: 'gpt-4', messages })).tokenCount).toEqual({
      // 3 per message, 2 for the text, 1 for the role, 3 to prime the reply.
      tokens: 9,
      model: 'gpt-4',
      encoding: 'cl100k_base',
      fallback: false,
    });
  });
});
