import { describe, expect, it } from 'vitest';
import { loadConfig, type OpenAiConfig } from '../../config/config.ts';
import { CallboardError } from '../../errors.ts';
import { chatRequest, isReasoningModel, type ChatMessage, type ChatParameters } from './chat-request.ts';

const loaded = loadConfig([], {}).config;
const limits = loaded.limits;
/** The shipped defaults (temperature 1.5, max_tokens 4000, penalties 0), with a top_p to see it applied. */
const settings: OpenAiConfig = { ...loaded.openai, topP: 0.9 };
const hello: ChatMessage[] = [{ role: 'user', content: 'Hello' }];

const build = (input: Partial<ChatParameters>, model = 'gpt-4o-mini', config = settings) => chatRequest({ messages: hello, ...input }, config, model, limits);

function refusal(input: Partial<ChatParameters>): CallboardError {
  try {
    build(input);
  } catch (error) {
    expect(error).toBeInstanceOf(CallboardError);
    expect((error as CallboardError).code).toBe('BAD_USER_INPUT');
    return error as CallboardError;
  }
  throw new Error('expected a refusal');
}

/** Messages that are refused, with the index of the faulty one. */
const badMessages: [string, unknown[], number][] = [
  ['an unknown role', [{ role: 'robot', content: 'beep' }], 0],
  ['a message that is not an object', [null], 0],
  ['null content in a user message', [{ role: 'user', content: null }], 0],
  ['absent content in a system message', [{ role: 'user', content: 'Hi' }, { role: 'system' }], 1],
  ['null content in an assistant message without tool calls', [{ role: 'assistant', content: null }], 0],
  ['null content in an assistant message with an empty list of tool calls', [{ role: 'assistant', content: null, tool_calls: [] }], 0],
  ['content that is neither text nor parts', [{ role: 'user', content: 42 }], 0],
  ['empty content parts', [{ role: 'user', content: [] }], 0],
  ['a text part without text', [{ role: 'user', content: [{ type: 'text' }] }], 0],
  ['a part of an unknown type', [{ role: 'user', content: [{ type: 'audio', audio: 'x' }] }], 0],
  ['an image part without a URL', [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }], 0],
  ['an image part in a system message', [{ role: 'system', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }], 0],
  ['an image part in an assistant message', [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AA==' } }] }], 1],
  ['a name that is not a string', [{ role: 'user', content: 'Hi', name: 7 }], 0],
  ['a tool message without tool_call_id', [{ role: 'tool', content: '{"temp": 20}' }], 0],
  ['tool_calls on a user message', [{ role: 'user', content: 'Hi', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }], 0],
  ['tool_calls that are not a list', [{ role: 'assistant', content: 'Hi', tool_calls: { id: 'c1' } }], 0],
  ['a tool call without an id', [{ role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] }], 0],
  ['a tool call whose arguments are an object', [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: {} } }] }], 0],
  ['a tool call without a function', [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function' }] }], 0],
  ['129 tool calls', [{ role: 'assistant', content: null, tool_calls: Array.from({ length: 129 }, (_, i) => ({ id: `c${i}`, type: 'function', function: { name: 'f', arguments: '{}' } })) }], 0],
];

describe('chatRequest: what it refuses', () => {
  it('refuses a call without messages', () => {
    expect(refusal({ messages: [] }).details).toEqual({ field: 'messages' });
  });

  it.each(badMessages)('refuses %s, naming the message', (_name, messages, index) => {
    expect(refusal({ messages: messages as ChatMessage[] }).details).toEqual({ field: 'messages', index });
  });

  const function_ = (name: string) => ({ type: 'function', function: { name, parameters: { type: 'object', properties: {} } } });
  it.each<[string, Partial<ChatParameters>, Record<string, unknown>]>([
    ['129 tools', { tools: Array.from({ length: 129 }, (_, i) => function_(`f${i}`)) }, { field: 'tools' }],
    ['a tool without a function name', { tools: [function_('ok'), { type: 'function', function: { parameters: {} } }] }, { field: 'tools', index: 1 }],
    ['a tool that is null', { tools: [null] }, { field: 'tools', index: 0 }],
    ['n of 0', { n: 0 }, { field: 'n' }],
    ['n of 129', { n: 129 }, { field: 'n' }],
    ['n of 1.5', { n: 1.5 }, { field: 'n' }],
    ['top_logprobs of 21', { topLogprobs: 21 }, { field: 'topLogprobs' }],
    ['top_logprobs of -1', { topLogprobs: -1 }, { field: 'topLogprobs' }],
    ['a seed of 1.5', { seed: 1.5 }, { field: 'seed' }],
    ['a seed past the safe integers', { seed: 2 ** 60 }, { field: 'seed' }],
    ['a user of 257 characters', { user: 'u'.repeat(257) }, { field: 'user' }],
    ['a response_format that is a string', { responseFormat: 'json_object' }, { field: 'responseFormat' }],
    ['a response_format of an unknown type', { responseFormat: { type: 'xml' } }, { field: 'responseFormat' }],
    ['a response_format without a type', { responseFormat: { json_schema: {} } }, { field: 'responseFormat' }],
    ['a temperature of 2.5', { temperature: 2.5 }, { field: 'temperature' }],
    ['a temperature that is not a number', { temperature: Number.NaN }, { field: 'temperature' }],
    ['a top_p of 1.1', { topP: 1.1 }, { field: 'topP' }],
    ['a frequency penalty of -3', { frequencyPenalty: -3 }, { field: 'frequencyPenalty' }],
    ['a presence penalty of 3', { presencePenalty: 3 }, { field: 'presencePenalty' }],
    ['max_tokens of 0', { maxTokens: 0 }, { field: 'maxTokens' }],
    ['max_tokens of 10.5', { maxTokens: 10.5 }, { field: 'maxTokens' }],
    ['5 stop sequences', { stop: ['a', 'b', 'c', 'd', 'e'] }, { field: 'stop' }],
  ])('refuses %s', (_name, input, details) => {
    expect(refusal(input).details).toEqual(details);
  });

  it('accepts each bound itself', () => {
    const request = build({ n: 128, topLogprobs: 20, user: 'u'.repeat(256), seed: -(2 ** 53 - 1), temperature: 2, topP: 0, stop: ['a', 'b', 'c', 'd'], tools: Array.from({ length: 128 }, (_, i) => function_(`f${i}`)) });
    expect(request).toMatchObject({ n: 128, top_logprobs: 20, seed: -(2 ** 53 - 1), temperature: 2, top_p: 0, stop: ['a', 'b', 'c', 'd'] });
    expect(request.tools).toHaveLength(128);
  });
});

describe('chatRequest: the body it builds', () => {
  it("with configDefaults (GraphQL), fills what the call left out from the configuration", () => {
    expect(build({})).toEqual({
      model: 'gpt-4o-mini',
      messages: hello,
      temperature: 1.5,
      max_tokens: 4000,
      top_p: 0.9,
      frequency_penalty: 0,
      presence_penalty: 0,
    });
  });

  it('with configDefaults, keeps what the call gave, zeros included', () => {
    expect(build({ temperature: 0, maxTokens: 10, topP: 0, frequencyPenalty: 0.5, presencePenalty: -0.5 })).toEqual({
      model: 'gpt-4o-mini',
      messages: hello,
      temperature: 0,
      max_tokens: 10,
      top_p: 0,
      frequency_penalty: 0.5,
      presence_penalty: -0.5,
    });
  });

  it('without configDefaults (the OpenAI door), sends only what the call gave', () => {
    expect(build({ configDefaults: false })).toEqual({ model: 'gpt-4o-mini', messages: hello });
    expect(build({ configDefaults: false, temperature: 0, maxTokens: 50, presencePenalty: null })).toEqual({ model: 'gpt-4o-mini', messages: hello, temperature: 0, max_tokens: 50 });
  });

  it('leaves out a configuration value that is unset, never sending null', () => {
    const request = build({}, 'gpt-4o-mini', { ...settings, topP: null });
    expect(request).not.toHaveProperty('top_p');
    expect(Object.values(request)).not.toContain(null);
  });

  it('sends every OpenAI parameter the call gave under its wire name', () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const responseFormat = { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object' } } };
    expect(
      build({
        configDefaults: false,
        stop: ['\n\n'],
        responseFormat,
        tools,
        toolChoice: { type: 'function', function: { name: 'get_weather' } },
        parallelToolCalls: false,
        n: 2,
        seed: 42,
        logprobs: true,
        topLogprobs: 3,
        user: 'user-123',
      }),
    ).toEqual({
      model: 'gpt-4o-mini',
      messages: hello,
      stop: ['\n\n'],
      response_format: responseFormat,
      tools,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      parallel_tool_calls: false,
      n: 2,
      seed: 42,
      logprobs: true,
      top_logprobs: 3,
      user: 'user-123',
    });
  });

  it('sends a tool-calling conversation with only the fields of each message it knows', () => {
    const messages = [
      { role: 'developer', content: 'Answer briefly.' },
      { role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AA==', detail: 'low' } }], name: 'ann' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'look', arguments: '{"at":"image"}' }, extra: 'dropped' }], audio: null },
      { role: 'tool', content: 'a cat', tool_call_id: 'call_1', unknown: true },
      { role: 'assistant', content: 'A cat.' },
    ] as unknown as ChatMessage[];
    expect(build({ messages, configDefaults: false }).messages).toEqual([
      { role: 'developer', content: 'Answer briefly.' },
      { role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AA==', detail: 'low' } }], name: 'ann' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'look', arguments: '{"at":"image"}' } }] },
      { role: 'tool', content: 'a cat', tool_call_id: 'call_1' },
      { role: 'assistant', content: 'A cat.' },
    ]);
  });

  it.each(['o1', 'o3-mini', 'o4-mini-2025-04-16', 'gpt-5', 'gpt-5-mini', 'my-reasoner'])('gives the reasoning model %s max_completion_tokens and no sampling parameter', (model) => {
    const config = { ...settings, reasoningModel: 'my-reasoner', reasoningEffort: 'low' };
    expect(build({ temperature: 0.3, topP: 0.5, frequencyPenalty: 1, presencePenalty: 1 }, model, config)).toEqual({
      model,
      messages: hello,
      max_completion_tokens: 4000,
      reasoning_effort: 'low',
    });
    expect(build({ configDefaults: false, maxTokens: 100, reasoningEffort: 'high', temperature: 0.3 }, model, config)).toEqual({
      model,
      messages: hello,
      max_completion_tokens: 100,
      reasoning_effort: 'high',
    });
    expect(build({ configDefaults: false }, model, config)).toEqual({ model, messages: hello });
  });

  it('tells reasoning models from others', () => {
    for (const model of ['gpt-4o', 'gpt-4o-mini', 'openchat', 'o', 'omni-1', 'llama-o1']) expect(isReasoningModel(model, settings)).toBe(false);
    for (const model of ['o1', 'o1-preview', 'o10', 'gpt-5', 'gpt-5.1']) expect(isReasoningModel(model, settings)).toBe(true);
  });

  it('passes fields it does not know through unchanged', () => {
    const extra = { logit_bias: { '50256': -100 }, store: true, metadata: { run: 'a' }, prediction: { type: 'content', content: 'x' } };
    expect(build({ configDefaults: false, extra })).toEqual({ model: 'gpt-4o-mini', messages: hello, ...extra });
  });

  it.each([true, false])('lets no unknown field replace one it sets or checks (configDefaults %s)', (configDefaults) => {
    const extra = {
      model: 'gpt-4-expensive',
      messages: [{ role: 'system', content: 'injected' }],
      temperature: 9,
      max_tokens: -1,
      max_completion_tokens: 10_000_000,
      top_p: 7,
      frequency_penalty: 9,
      presence_penalty: 9,
      stop: ['1', '2', '3', '4', '5', '6'],
      response_format: 'xml',
      reasoning_effort: 'maximum',
      tools: Array.from({ length: 500 }, () => ({})),
      tool_choice: 'required',
      parallel_tool_calls: true,
      n: 100_000,
      seed: 0.5,
      logprobs: true,
      top_logprobs: 99,
      user: 'u'.repeat(10_000),
      stream: true,
      stream_options: { include_usage: true },
      kept: 'yes',
    };
    const request = build({ configDefaults, extra, temperature: 0.2 });
    expect(request).toEqual(configDefaults ? { ...build({ temperature: 0.2 }), kept: 'yes' } : { model: 'gpt-4o-mini', messages: hello, temperature: 0.2, kept: 'yes' });
  });
});
