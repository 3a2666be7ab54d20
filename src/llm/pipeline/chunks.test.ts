import { describe, expect, it } from 'vitest';
import { chatCompletion, chatCompletionChunks, type ChatCompletionOptions } from '../../../test/support/fake-openai.ts';
import type { ChatCompletion, ChatCompletionChunk } from '../providers/provider.ts';
import { ChunkAssembler, replayChunks } from './chunks.ts';

type ChunkChoice = ChatCompletionChunk['choices'][number];
type Delta = ChunkChoice['delta'] & { reasoning_content?: string | null; reasoning?: string | null };
type Logprob = NonNullable<NonNullable<ChunkChoice['logprobs']>['content']>[number];

const head = { id: 'chatcmpl-1', object: 'chat.completion.chunk' as const, created: 1_700_000_000, model: 'gpt-4o-mini-2024-07-18', system_fingerprint: 'fp_1' };

/** A chunk as OpenAI streams it with stream_options.include_usage: every chunk but the last has `usage: null`. */
function chunk(index: number, delta: Delta, extra: Partial<ChunkChoice> = {}): ChatCompletionChunk {
  return { ...head, choices: [{ index, delta, logprobs: null, finish_reason: null, ...extra }], usage: null };
}

const usage = { prompt_tokens: 12, completion_tokens: 9, total_tokens: 21 };
const usageChunk: ChatCompletionChunk = { ...head, choices: [], usage };

function logprob(token: string, value = -0.1): Logprob {
  return { token, logprob: value, bytes: [...Buffer.from(token)], top_logprobs: [{ token, logprob: value, bytes: [...Buffer.from(token)] }] };
}

function assemble(chunks: Iterable<ChatCompletionChunk>): ChatCompletion | null {
  const assembler = new ChunkAssembler();
  for (const part of chunks) assembler.add(part);
  return assembler.result();
}

describe('ChunkAssembler', () => {
  it('has no answer and is not finished before the first chunk', () => {
    const assembler = new ChunkAssembler();
    expect(assembler.result()).toBeNull();
    expect(assembler.finished).toBe(false);
    expect(assembler.chunks).toBe(0);
  });

  it('assembles two interleaved choices (n=2) with their logprobs, finished only once both have a finish reason, then the usage', () => {
    const assembler = new ChunkAssembler(2);
    const stream = [
      chunk(0, { role: 'assistant', content: '', refusal: null }),
      chunk(1, { role: 'assistant', content: '', refusal: null }),
      chunk(0, { content: 'Hel' }, { logprobs: { content: [logprob('Hel', -0.5)], refusal: null } }),
      chunk(1, { content: 'Bon' }, { logprobs: { content: [logprob('Bon', -0.7)], refusal: null } }),
      chunk(0, { content: 'lo' }, { logprobs: { content: [logprob('lo', -0.01)], refusal: null } }),
      chunk(1, { content: 'jour' }, { logprobs: { content: [logprob('jour', -0.02)], refusal: null } }),
    ];
    for (const part of stream) assembler.add(part);
    expect(assembler.finished).toBe(false);
    assembler.add(chunk(0, {}, { finish_reason: 'stop' }));
    expect(assembler.finished).toBe(false);
    assembler.add(chunk(1, {}, { finish_reason: 'length' }));
    expect(assembler.finished).toBe(true);
    expect(assembler.result()!.usage).toBeUndefined();
    assembler.add(usageChunk);

    expect(assembler.chunks).toBe(9);
    expect(assembler.result()).toEqual({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1_700_000_000,
      model: 'gpt-4o-mini-2024-07-18',
      system_fingerprint: 'fp_1',
      usage,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'Hello', refusal: null },
          finish_reason: 'stop',
          logprobs: { content: [logprob('Hel', -0.5), logprob('lo', -0.01)], refusal: null },
        },
        {
          index: 1,
          message: { role: 'assistant', content: 'Bonjour', refusal: null },
          finish_reason: 'length',
          logprobs: { content: [logprob('Bon', -0.7), logprob('jour', -0.02)], refusal: null },
        },
      ],
    });
  });

  it('is not finished when one choice finished and the other of n=2 never began', () => {
    const assembler = new ChunkAssembler(2);
    assembler.add(chunk(0, { role: 'assistant', content: 'Hi' }));
    assembler.add(chunk(0, {}, { finish_reason: 'stop' }));
    expect(assembler.finished).toBe(false);
    // One choice expected (the default): the same chunks are the whole answer.
    const single = new ChunkAssembler();
    single.add(chunk(0, { role: 'assistant', content: 'Hi' }));
    single.add(chunk(0, {}, { finish_reason: 'stop' }));
    expect(single.finished).toBe(true);
  });

  it('joins two parallel tool calls whose id and name come first and whose arguments come in pieces, interleaved by index', () => {
    const stream = [
      chunk(0, { role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '' } }], refusal: null }),
      chunk(0, { tool_calls: [{ index: 0, function: { arguments: '{"ci' } }] }),
      chunk(0, { tool_calls: [{ index: 0, function: { arguments: 'ty": "Pa' } }] }),
      chunk(0, { tool_calls: [{ index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '' } }] }),
      chunk(0, { tool_calls: [{ index: 0, function: { arguments: 'ris"}' } }] }),
      chunk(0, { tool_calls: [{ index: 1, function: { arguments: '{"zone":' } }] }),
      chunk(0, { tool_calls: [{ index: 1, function: { arguments: ' "CET"}' } }] }),
      chunk(0, {}, { finish_reason: 'tool_calls' }),
      usageChunk,
    ];
    const result = assemble(stream)!;
    expect(result.choices).toEqual([
      {
        index: 0,
        message: {
          role: 'assistant',
          content: null,
          refusal: null,
          tool_calls: [
            { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
            { id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"zone": "CET"}' } },
          ],
        },
        finish_reason: 'tool_calls',
        logprobs: null,
      },
    ]);
    expect(result.usage).toEqual(usage);
  });

  it('joins reasoning_content (DeepSeek, vLLM) and reasoning (OpenRouter) deltas apart from the content', () => {
    const result = assemble([
      chunk(0, { role: 'assistant', content: null, reasoning_content: '' }),
      chunk(0, { content: null, reasoning_content: 'Two and ' }),
      chunk(0, { content: null, reasoning_content: 'two: four.', reasoning: 'Adding.' }),
      chunk(0, { content: 'It is ', reasoning_content: null }),
      chunk(0, { content: '4.', reasoning_content: null }),
      chunk(0, {}, { finish_reason: 'stop' }),
    ])!;
    expect(result.choices[0]!.message).toEqual({ role: 'assistant', content: 'It is 4.', refusal: null, reasoning_content: 'Two and two: four.', reasoning: 'Adding.' });
  });

  it('joins a refusal', () => {
    const result = assemble([
      chunk(0, { role: 'assistant', content: null, refusal: '' }),
      chunk(0, { refusal: "I can't " }),
      chunk(0, { refusal: 'help with that.' }),
      chunk(0, {}, { finish_reason: 'stop' }),
    ])!;
    expect(result.choices[0]!.message).toEqual({ role: 'assistant', content: null, refusal: "I can't help with that." });
  });

  it('answers a valid partial answer mid-stream: what came so far, no finish reason, no usage', () => {
    const assembler = new ChunkAssembler();
    assembler.add(chunk(0, { role: 'assistant', content: '' }));
    assembler.add(chunk(0, { content: 'Let me ' }));
    assembler.add(chunk(0, { content: 'look.', tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'search', arguments: '{"q": "pari' } }] }));
    // A copy: the assembler keeps adding to its own objects.
    const partial = structuredClone(assembler.result());
    expect(assembler.finished).toBe(false);
    expect(partial).toEqual({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1_700_000_000,
      model: 'gpt-4o-mini-2024-07-18',
      system_fingerprint: 'fp_1',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'Let me look.', refusal: null, tool_calls: [{ id: 'call_a', type: 'function', function: { name: 'search', arguments: '{"q": "pari' } }] },
          finish_reason: null,
          logprobs: null,
        },
      ],
    });
    expect(JSON.parse(JSON.stringify(partial))).toEqual(partial);
  });
});

const base = { id: 'chatcmpl-9', object: 'chat.completion' as const, created: 1_700_000_123, model: 'gpt-4o-2024-08-06' };
type CompletionChoice = ChatCompletion['choices'][number];

function completion(choices: CompletionChoice[], extra: Partial<ChatCompletion> = {}): ChatCompletion {
  return { ...base, choices, usage: { prompt_tokens: 30, completion_tokens: 40, total_tokens: 70 }, ...extra };
}

function choice(message: Partial<CompletionChoice['message']> & Record<string, unknown>, extra: Partial<CompletionChoice> = {}): CompletionChoice {
  return { index: 0, message: { role: 'assistant', content: null, refusal: null, ...message } as CompletionChoice['message'], finish_reason: 'stop', logprobs: null, ...extra };
}

const helloTokens = ['Hello', ',', ' world', '!', ' How', ' are', ' you', '?'];

const completions: Record<string, ChatCompletion> = {
  text: completion([choice({ content: '  The answer,\nin two lines:  forty two.\n\n', annotations: [] })], { system_fingerprint: 'fp_7', service_tier: 'default' }),
  'tool calls': completion([
    choice(
      {
        content: null,
        tool_calls: [
          { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius", "days": 3}' } },
          { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: '{}' } },
        ],
      },
      { finish_reason: 'tool_calls' },
    ),
  ]),
  'text and a tool call': completion([
    choice({ content: 'Checking the weather.', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] }, { finish_reason: 'tool_calls' }),
  ]),
  reasoning: completion([choice({ content: 'It is 4.', reasoning_content: 'Two and two make four; say it plainly.' })]),
  refusal: completion([choice({ content: null, refusal: "I'm sorry, I can't help with that request." })]),
  'logprobs whose tokens join to the content': completion([
    choice({ content: helloTokens.join('') }, { logprobs: { content: helloTokens.map((token, index) => logprob(token, -index / 10)), refusal: null } }),
  ]),
  // Tokens that split a character in bytes do not join to the text: the content goes word by word, the logprobs whole.
  'logprobs whose tokens do not join to the content': completion([
    choice({ content: 'Un café, merci.' }, { logprobs: { content: ['Un', ' caf', '\\xc3', '\\xa9', ',', ' merci', '.'].map((token) => logprob(token)), refusal: null } }),
  ]),
  'a refusal with logprobs': completion([
    choice({ content: null, refusal: 'I cannot.' }, { logprobs: { content: null, refusal: ['I', ' cannot', '.'].map((token) => logprob(token)) } }),
  ]),
  'two choices': completion([choice({ content: 'First answer here.' }), choice({ content: 'Second, longer answer.' }, { index: 1, finish_reason: 'length' })]),
  'no usage': { ...base, choices: [choice({ content: 'No usage was given.' })] },
  'empty content': completion([choice({ content: '' }, { finish_reason: 'length' })]),
};

/** What a replay does not carry: annotations (url citations) are not streamed. */
function withoutAnnotations(choices: readonly CompletionChoice[]): CompletionChoice[] {
  return choices.map(({ message, ...rest }) => {
    const { annotations: _annotations, ...kept } = message;
    return { ...rest, message: kept as CompletionChoice['message'] };
  });
}

const contentOf = (chunks: ChatCompletionChunk[], index = 0) => chunks.flatMap((part) => part.choices.filter((c) => c.index === index && typeof c.delta.content === 'string' && c.delta.content !== '').map((c) => c.delta.content!));

describe('ChunkAssembler and the fake provider', () => {
  it('assembles the fake\'s stream (n=2, tool calls, reasoning, logprobs, choices taking turns) into the answer it gives whole', () => {
    const options: ChatCompletionOptions = {
      id: 'chatcmpl-fake',
      model: 'fake-reasoner',
      logprobs: { topLogprobs: 2 },
      usage: { prompt_tokens: 7 },
      choices: [
        { content: 'Looking it up now', reasoning: 'The user wants weather.', toolCalls: [{ id: 'call_a', name: 'weather', arguments: '{"city":"Oslo"}' }, { id: 'call_b', name: 'time', arguments: '{"zone":"CET"}' }] },
        { content: 'It is sunny in Oslo today', reasoning: 'Answer directly.' },
      ],
    };
    const assembler = new ChunkAssembler(2);
    for (const part of chatCompletionChunks({ ...options, includeUsage: true })) assembler.add(part);
    const whole = chatCompletion(options);
    expect(assembler.finished).toBe(true);
    // What differs: the whole answer's `annotations: []` on each message, which a stream never carries.
    const withoutAnnotations = whole.choices.map(({ message: { annotations: _annotations, ...message }, ...choice }) => ({ ...choice, message }));
    const result = assembler.result()!;
    expect(result).toEqual({ ...whole, created: result.created, choices: withoutAnnotations });
  });
});

describe('replayChunks', () => {
  it.each(Object.entries(completions))('assembles back to the same answer: %s', (_name, original) => {
    const chunks = [...replayChunks(original, { includeUsage: true })];
    const assembler = new ChunkAssembler(original.choices.length);
    for (const part of chunks) assembler.add(part);
    expect(assembler.finished).toBe(true);
    const result = assembler.result()!;
    expect(result.choices).toEqual(withoutAnnotations(original.choices));
    expect(result.usage).toEqual(original.usage);
    expect({ id: result.id, created: result.created, model: result.model, system_fingerprint: result.system_fingerprint, service_tier: result.service_tier }).toEqual({
      id: original.id,
      created: original.created,
      model: original.model,
      system_fingerprint: original.system_fingerprint,
      service_tier: original.service_tier,
    });
    for (const part of chunks) expect(part).toMatchObject({ id: original.id, object: 'chat.completion.chunk', created: original.created, model: original.model });
  });

  it('never sends multi-word content in one chunk: word by word, or token by token with each token its logprob', () => {
    const text = completions.text!;
    const pieces = contentOf([...replayChunks(text, { includeUsage: false })]);
    expect(pieces.join('')).toBe(text.choices[0]!.message.content);
    expect(pieces.length).toBe(7);
    for (const piece of pieces) expect(piece.trim()).not.toContain(' ');

    const tokens = [...replayChunks(completions['logprobs whose tokens join to the content']!, { includeUsage: false })].filter((part) => part.choices[0]?.delta.content);
    expect(tokens.map((part) => part.choices[0]!.delta.content)).toEqual(helloTokens);
    expect(tokens.map((part) => part.choices[0]!.logprobs!.content!.map((entry) => entry.token))).toEqual(helloTokens.map((token) => [token]));
  });

  it('sends the tool calls as a stream does: id and name first, then the arguments in pieces', () => {
    const chunks = [...replayChunks(completions['tool calls']!, { includeUsage: false })];
    const calls = chunks.flatMap((part) => part.choices[0]?.delta.tool_calls ?? []);
    expect(calls[0]).toEqual({ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } });
    const firstArguments = calls.filter((call) => call.index === 0).slice(1);
    expect(firstArguments.length).toBeGreaterThan(1);
    for (const call of firstArguments) expect(call).toEqual({ index: 0, function: { arguments: expect.any(String) } });
    // The role chunk says the content is null, as OpenAI's stream of a tool call does.
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: null });
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('tool_calls');
  });

  it('ends with the usage in a chunk without choices when asked, every other chunk with usage null', () => {
    const chunks = [...replayChunks(completions.text!, { includeUsage: true })];
    expect(chunks.at(-1)).toEqual({ id: base.id, object: 'chat.completion.chunk', created: base.created, model: base.model, system_fingerprint: 'fp_7', service_tier: 'default', choices: [], usage: completions.text!.usage });
    for (const part of chunks.slice(0, -1)) {
      expect(part.usage).toBeNull();
      expect(part.choices).toHaveLength(1);
    }
  });

  it('sends no usage, not even null, when not asked', () => {
    const chunks = [...replayChunks(completions.text!, { includeUsage: false })];
    for (const part of chunks) {
      expect(part).not.toHaveProperty('usage');
      expect(part.choices).toHaveLength(1);
    }
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('stop');
    expect(assemble(chunks)!.usage).toBeUndefined();
  });
});
