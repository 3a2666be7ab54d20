import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatMessage } from '../../src/llm/client.ts';
import { databaseKinds } from '../support/database.ts';
import { azureKey, failure, historyRow, openaiKey, useLlmHarness, user } from './harness.ts';

const messages: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say hi.', name: 'ana' },
];
const systemTemplate = 'You are {{name}}. Notes: {{{raw}}} and {{& alsoRaw}}.';
const userTemplate = 'Tell {{name}} about {{topic}}.';
const tricky = `Tom & "Jerry" <cat> 'n' /slash`;
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

let promptsDir: string;

beforeAll(async () => {
  promptsDir = await mkdtemp(path.join(tmpdir(), 'callboard-prompts-'));
  await mkdir(path.join(promptsDir, 'agents'));
  await writeFile(path.join(promptsDir, 'agents', 'system.mustache'), systemTemplate);
  await writeFile(path.join(promptsDir, 'user.mustache'), userTemplate);
});

afterAll(async () => {
  await rm(promptsDir, { recursive: true, force: true });
});

describe.each(databaseKinds)('requests on %s', (kind) => {
  const harness = useLlmHarness(kind);

  describe('providers', () => {
    it('calls OpenAI at /v1/chat/completions with a bearer key', async () => {
      const { llm } = await harness.start();

      const result = await llm.sendMessage({ messages: user('hello there') });

      expect(result.message).toMatchObject({ role: 'assistant', content: 'echo: hello there', refusal: null });
      expect(harness.fake.requests).toHaveLength(1);
      const request = harness.fake.requests[0]!;
      expect(request).toMatchObject({ route: 'chat', flavor: 'openai', method: 'POST', path: '/v1/chat/completions', query: {} });
      expect(request.headers['authorization']).toBe(`Bearer ${openaiKey}`);
      expect(request.headers['api-key']).toBeUndefined();
    });

    it('calls an Azure deployment with api-version and the api-key header', async () => {
      const { llm } = await harness.start({ openai: { API_TYPE: 'azure', MODEL: 'chat-deployment' } });

      const result = await llm.sendMessage({ messages: user('hello azure') });

      expect(result.message.content).toBe('echo: hello azure');
      expect(result.model).toBe('chat-deployment');
      expect(harness.fake.requests).toHaveLength(1);
      const request = harness.fake.requests[0]!;
      expect(request).toMatchObject({
        route: 'chat',
        flavor: 'azure',
        path: '/openai/deployments/chat-deployment/chat/completions',
        query: { 'api-version': '2023-05-15' },
      });
      expect(request.headers['api-key']).toBe(azureKey);
      expect(request.headers['authorization']).toBeUndefined();
    });

    it('embeds on OpenAI at /v1/embeddings with a bearer key', async () => {
      const { llm } = await harness.start();

      await llm.embed({ texts: ['some text'] });

      expect(harness.fake.requests).toHaveLength(1);
      expect(harness.fake.requests[0]).toMatchObject({ route: 'embeddings', flavor: 'openai', path: '/v1/embeddings', body: { model: 'text-embedding-3-small' } });
      expect(harness.fake.requests[0]!.headers['authorization']).toBe(`Bearer ${openaiKey}`);
    });

    it('embeds on an Azure deployment with AZURE_API_VERSION when no embedding version is set', async () => {
      const { llm } = await harness.start({ openai: { API_TYPE: 'azure', EMBEDDING_MODEL: 'embedding-deployment', AZURE_API_VERSION: '2024-06-01' } });

      await llm.embed({ texts: ['some text'] });

      expect(harness.fake.requests).toHaveLength(1);
      expect(harness.fake.requests[0]).toMatchObject({
        route: 'embeddings',
        flavor: 'azure',
        path: '/openai/deployments/embedding-deployment/embeddings',
        query: { 'api-version': '2024-06-01' },
      });
      expect(harness.fake.requests[0]!.headers['api-key']).toBe(azureKey);
    });

    it('uses AZURE_EMBEDDING_MODEL_API_VERSION for Azure embeddings only', async () => {
      const { llm } = await harness.start({
        openai: { API_TYPE: 'azure', EMBEDDING_MODEL: 'embedding-deployment', AZURE_EMBEDDING_MODEL_API_VERSION: '2024-02-01' },
      });

      await llm.embed({ texts: ['some text'] });
      await llm.sendMessage({ messages: user('and a chat') });

      expect(harness.fake.requestsTo('embeddings').map((request) => request.apiVersion)).toEqual(['2024-02-01']);
      expect(harness.fake.requestsTo('chat').map((request) => request.apiVersion)).toEqual(['2023-05-15']);
    });

    it('serves a per-call API type next to the configured one', async () => {
      const { llm } = await harness.start();

      await llm.sendMessage({ messages: user('to openai') });
      await llm.sendMessage({ messages: user('to azure'), apiType: 'azure' });

      expect(harness.fake.requests.map((request) => [request.flavor, request.path])).toEqual([
        ['openai', '/v1/chat/completions'],
        ['azure', '/openai/deployments/gpt-4o-mini/chat/completions'],
      ]);
    });

    it('calls an OpenAI-compatible server at BASE_URL without an API key', async () => {
      const { llm } = await harness.start({ openai: { API_TYPE: 'openai-compatible', MODEL: 'llama3' }, env: { OPENAI_API_KEY: undefined } });

      const result = await llm.sendMessage({ messages: user('hello local') });

      expect(result.message.content).toBe('echo: hello local');
      expect(harness.fake.requests[0]).toMatchObject({ path: '/v1/chat/completions', body: { model: 'llama3' } });
    });

    it('answers UNKNOWN_PROVIDER for an unregistered API type, listing the registered ones', async () => {
      const { llm } = await harness.start();

      const error = await failure(llm.sendMessage({ messages: user('hello'), apiType: 'nope' }));

      expect(error.code).toBe('UNKNOWN_PROVIDER');
      expect(error.message).toContain('"nope"');
      expect(error.message).toContain('openai, azure, openai-compatible');
      expect(error.details).toMatchObject({ apiType: 'nope', registered: ['openai', 'azure', 'openai-compatible'] });
      expect(harness.fake.requests).toHaveLength(0);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'UNKNOWN_PROVIDER', apiType: 'nope', attemptCount: 0 });
    });

    it('answers PROVIDER_NOT_CONFIGURED naming the missing variable', async () => {
      const { llm } = await harness.start({ openai: { API_TYPE: 'azure' }, env: { AZURE_OPENAI_KEY: undefined } });

      const error = await failure(llm.sendMessage({ messages: user('hello') }));

      expect(error.code).toBe('PROVIDER_NOT_CONFIGURED');
      expect(error.message).toContain('AZURE_OPENAI_KEY');
      expect(error.message).not.toContain('AZURE_OPENAI_ENDPOINT');
      expect(error.details).toMatchObject({ apiType: 'azure', missing: ['AZURE_OPENAI_KEY'] });
      expect(harness.fake.requests).toHaveLength(0);
    });

    it('answers PROVIDER_NOT_CONFIGURED for OpenAI without OPENAI_API_KEY', async () => {
      const { llm } = await harness.start({ env: { OPENAI_API_KEY: undefined } });

      const error = await failure(llm.embed({ texts: ['hello'] }));

      expect(error.code).toBe('PROVIDER_NOT_CONFIGURED');
      expect(error.details).toMatchObject({ apiType: 'openai', missing: ['OPENAI_API_KEY'] });
      expect(harness.fake.requests).toHaveLength(0);
    });
  });

  describe('the request body', () => {
    const sentBody = () => {
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      return harness.fake.requestsTo('chat')[0]!.body;
    };

    it("sends TinyTroupe's defaults from config and nothing else", async () => {
      const { llm } = await harness.start();

      await llm.sendMessage({ messages });

      expect(sentBody()).toEqual({
        model: 'gpt-4o-mini',
        messages,
        temperature: 1.5,
        max_tokens: 4000,
        frequency_penalty: 0,
        presence_penalty: 0,
        stream: false,
      });
    });

    it('sends the values of config.ini', async () => {
      const { llm } = await harness.start({
        openai: { MODEL: 'gpt-4o', TEMPERATURE: 0.7, MAX_TOKENS: 100, TOP_P: 0.9, FREQ_PENALTY: 0.1, PRESENCE_PENALTY: 0.2 },
      });

      await llm.sendMessage({ messages });

      expect(sentBody()).toMatchObject({ model: 'gpt-4o', temperature: 0.7, max_tokens: 100, top_p: 0.9, frequency_penalty: 0.1, presence_penalty: 0.2 });
    });

    it('lets per-call arguments win over config, zeros included', async () => {
      const { llm } = await harness.start({ openai: { TOP_P: 0.9, FREQ_PENALTY: 0.1, PRESENCE_PENALTY: 0.2 } });

      await llm.sendMessage({ messages, model: 'gpt-4.1', temperature: 0, maxTokens: 50, topP: 0.5, frequencyPenalty: 0, presencePenalty: -0.5 });

      expect(sentBody()).toMatchObject({ model: 'gpt-4.1', temperature: 0, max_tokens: 50, top_p: 0.5, frequency_penalty: 0, presence_penalty: -0.5 });
    });

    it('sends top_p when only the call sets it', async () => {
      const { llm } = await harness.start();

      await llm.sendMessage({ messages, topP: 0.3 });

      expect(sentBody().top_p).toBe(0.3);
    });

    it('passes stop and a JSON-mode response_format through', async () => {
      const { llm } = await harness.start();

      await llm.sendMessage({ messages, stop: ['END', '\n\n'], responseFormat: { type: 'json_object' } });

      expect(sentBody()).toMatchObject({ stop: ['END', '\n\n'], response_format: { type: 'json_object' } });
    });

    it('passes a JSON-schema response_format through unchanged', async () => {
      const { llm } = await harness.start();
      const responseFormat = {
        type: 'json_schema',
        json_schema: {
          name: 'greeting',
          strict: true,
          schema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'], additionalProperties: false },
        },
      };

      await llm.sendMessage({ messages, responseFormat });

      expect(sentBody().response_format).toEqual(responseFormat);
    });

    it.each([
      ['o3-mini', {}],
      ['gpt-5', {}],
      ['o1', {}],
      ['my-reasoner', { REASONING_MODEL: 'my-reasoner' }],
    ])('sends %s max_completion_tokens and no sampling parameters', async (model, openai) => {
      const { llm } = await harness.start({ openai: { ...openai, TOP_P: 0.9 } });

      await llm.sendMessage({ messages, model, temperature: 0.5, topP: 0.5, frequencyPenalty: 0.5, presencePenalty: 0.5 });

      expect(sentBody()).toEqual({ model, messages, max_completion_tokens: 4000, stream: false });
    });

    it('sends REASONING_EFFORT to reasoning models, a per-call effort and max tokens winning', async () => {
      const { llm } = await harness.start({ openai: { REASONING_EFFORT: 'high', MAX_TOKENS: 2000 } });

      await llm.sendMessage({ messages, model: 'o3-mini' });
      await llm.sendMessage({ messages, model: 'gpt-5-mini', reasoningEffort: 'low', maxTokens: 300 });

      expect(harness.fake.requestsTo('chat').map((request) => request.body)).toEqual([
        { model: 'o3-mini', messages, max_completion_tokens: 2000, reasoning_effort: 'high', stream: false },
        { model: 'gpt-5-mini', messages, max_completion_tokens: 300, reasoning_effort: 'low', stream: false },
      ]);
    });

    it('treats other models normally when REASONING_MODEL is set, without a reasoning effort', async () => {
      const { llm } = await harness.start({ openai: { REASONING_MODEL: 'my-reasoner', REASONING_EFFORT: 'high' } });

      await llm.sendMessage({ messages, model: 'gpt-4o' });

      const body = sentBody();
      expect(body).toMatchObject({ model: 'gpt-4o', temperature: 1.5, max_tokens: 4000 });
      expect(body).not.toHaveProperty('reasoning_effort');
      expect(body).not.toHaveProperty('max_completion_tokens');
    });
  });

  describe('templated calls', () => {
    const start = () => harness.start({ ini: `[Prompts]\nDIR=${promptsDir}` });

    it('renders a system template as chevron does and records its name and hash', async () => {
      const { llm } = await start();

      const result = await llm.templatedCall({
        systemTemplateName: 'agents/system.mustache',
        userPrompt: 'Hello {{name}}',
        variables: { name: tricky, raw: tricky, alsoRaw: '<b>&</b>' },
      });

      expect(harness.fake.requestsTo('chat')[0]!.body.messages).toEqual([
        { role: 'system', content: `You are Tom &amp; &quot;Jerry&quot; &lt;cat&gt; 'n' /slash. Notes: ${tricky} and <b>&</b>.` },
        { role: 'user', content: 'Hello {{name}}' },
      ]);
      expect(result.message.content).toBe('echo: Hello {{name}}');
      const row = await historyRow(harness, result.call.id);
      expect(row).toMatchObject({ status: 'SUCCESS', templateName: 'agents/system.mustache', templateHash: sha256(systemTemplate) });
    });

    it('renders both templates and records them together', async () => {
      const { llm } = await start();

      const result = await llm.templatedCall({
        systemTemplateName: 'agents/system.mustache',
        userTemplateName: 'user.mustache',
        variables: { name: 'Ana', raw: 'r', alsoRaw: 'a', topic: 'tides & moons' },
      });

      expect(harness.fake.requestsTo('chat')[0]!.body.messages[1]).toEqual({ role: 'user', content: 'Tell Ana about tides &amp; moons.' });
      const row = await historyRow(harness, result.call.id);
      expect(row).toMatchObject({
        templateName: 'agents/system.mustache+user.mustache',
        templateHash: sha256(`${systemTemplate}\u0000${userTemplate}`),
      });
    });

    it('sends plain prompts as given, with no template recorded', async () => {
      const { llm } = await start();

      const result = await llm.templatedCall({ systemPrompt: 'Be {{brief}}.', userPrompt: 'Go.', variables: { brief: 'terse' } });

      expect(harness.fake.requestsTo('chat')[0]!.body.messages).toEqual([
        { role: 'system', content: 'Be {{brief}}.' },
        { role: 'user', content: 'Go.' },
      ]);
      const row = await historyRow(harness, result.call.id);
      expect(row).toMatchObject({ templateName: null, templateHash: null });
    });

    it('passes the call options on to sendMessage', async () => {
      const { llm } = await start();

      await llm.templatedCall({ systemPrompt: 'System.', model: 'gpt-4o', temperature: 0.3, responseFormat: { type: 'json_object' } });

      expect(harness.fake.requestsTo('chat')[0]!.body).toMatchObject({ model: 'gpt-4o', temperature: 0.3, response_format: { type: 'json_object' } });
    });

    it('rejects a template and a prompt for the same role, as TinyTroupe does', async () => {
      const { llm } = await start();

      const error = await failure(llm.templatedCall({ systemTemplateName: 'agents/system.mustache', systemPrompt: 'and a prompt' }));

      expect(error.code).toBe('BAD_USER_INPUT');
      expect(error.message).toContain('Either the template or the prompt must be specified, but not both.');
      expect(harness.fake.requests).toHaveLength(0);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'BAD_USER_INPUT', attemptCount: 0 });
    });

    it('answers NOT_FOUND for a missing template, and records the failure under its name', async () => {
      const { llm } = await start();

      const error = await failure(llm.templatedCall({ systemTemplateName: 'missing.mustache' }));

      expect(error.code).toBe('NOT_FOUND');
      expect(harness.fake.requests).toHaveLength(0);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'NOT_FOUND', templateName: 'missing.mustache', templateHash: null });
    });

    it('refuses tags past MAX_TAGS before rendering, and records the call without them', async () => {
      const { llm } = await start();

      const tags = Array.from({ length: 21 }, (_, index) => `tag-${index}`);
      const error = await failure(llm.templatedCall({ systemTemplateName: 'missing.mustache', tags }));

      expect(error.details).toMatchObject({ field: 'tags', limit: 'MAX_TAGS', max: 20, actual: 21 });
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'BAD_USER_INPUT', tags: [], templateName: 'missing.mustache' });
    });

    it('refuses rendered messages past MAX_CHARACTERS_PER_CALL', async () => {
      const { llm } = await harness.start({ ini: `[Prompts]\nDIR=${promptsDir}\n[Limits]\nMAX_CHARACTERS_PER_CALL=100\n` });

      // The template is short; the value rendered into it is not.
      const error = await failure(llm.templatedCall({ systemTemplateName: 'agents/system.mustache', variables: { name: 'a'.repeat(100) } }));

      expect(error.details).toMatchObject({ field: 'messages', limit: 'MAX_CHARACTERS_PER_CALL', max: 100 });
      expect(error.details.actual).toBeGreaterThan(100);
      expect(harness.fake.requests).toHaveLength(0);
    });
  });
});
