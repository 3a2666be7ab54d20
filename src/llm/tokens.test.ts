import { describe, expect, it } from 'vitest';
import { CallboardError } from '../errors.ts';
import { randomGenerator } from '../../test/support/seeded-random.ts';
import {
  countMessageTokens,
  countMessageTokensAsync,
  countTextTokens,
  countTextTokensAsync,
  countTokens,
  countTokensAsync,
  encodingForModel,
  type TokenMessage,
} from './tokens.ts';

// The example conversation of the OpenAI cookbook "How to count tokens with tiktoken"
// (openai/openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb, section 6), copied exactly.
const cookbookMessages: TokenMessage[] = [
  {
    role: 'system',
    content: 'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.',
  },
  { role: 'system', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
  { role: 'system', name: 'example_assistant', content: 'Things working well together will increase revenue.' },
  {
    role: 'system',
    name: 'example_user',
    content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
  },
  { role: 'system', name: 'example_assistant', content: "Let's talk later when we're less busy about how to do better." },
  { role: 'user', content: "This late pivot means we don't have time to boil the ocean for the client deliverable." },
];

function codeOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    return error instanceof CallboardError ? error.code : 'not a CallboardError';
  }
  return undefined;
}

describe('countMessageTokens matches the prompt tokens the OpenAI API reported in the cookbook', () => {
  it.each([
    ['gpt-3.5-turbo', 129, 'cl100k_base'],
    ['gpt-4-0613', 129, 'cl100k_base'],
    ['gpt-4', 129, 'cl100k_base'],
    ['gpt-4o', 124, 'o200k_base'],
    ['gpt-4o-mini', 124, 'o200k_base'],
    // From the notebook's earlier revision, which still ran gpt-3.5-turbo-0301.
    ['gpt-3.5-turbo-0301', 127, 'cl100k_base'],
  ] as const)('%s: %i tokens', (model, tokens, encoding) => {
    expect(countMessageTokens(cookbookMessages, model)).toEqual({ tokens, model, encoding, fallback: false });
  });

  it('counts Azure deployment names like the OpenAI model', () => {
    expect(countMessageTokens(cookbookMessages, 'gpt-35-turbo').tokens).toBe(129);
    expect(countMessageTokens(cookbookMessages, 'gpt-35-turbo-0301').tokens).toBe(127);
  });

  it('primes the reply even for an empty conversation', () => {
    expect(countMessageTokens([], 'gpt-4o').tokens).toBe(3);
  });
});

describe('encodingForModel', () => {
  it.each([
    'gpt-4o',
    'gpt-4o-2024-08-06',
    'gpt-4o-mini',
    'chatgpt-4o-latest',
    'gpt-4.1',
    'gpt-4.1-nano-2025-04-14',
    'gpt-4.5-preview',
    'gpt-5',
    'gpt-5-mini',
    'o1',
    'o1-mini',
    'o3-mini-2025-01-31',
    'o4-mini',
    'GPT-4o',
    'ft:gpt-4o-mini-2024-07-18:acme::abc123',
  ])('%s uses o200k_base', (model) => {
    expect(encodingForModel(model)).toEqual({ encoding: 'o200k_base', fallback: false });
  });

  it.each([
    'gpt-4',
    'gpt-4-0613',
    'gpt-4-32k',
    'gpt-4-turbo',
    'gpt-4-turbo-2024-04-09',
    'gpt-3.5-turbo',
    'gpt-3.5-turbo-0125',
    'gpt-3.5-turbo-16k',
    'gpt-35-turbo',
    'gpt-35-turbo-16k',
    'text-embedding-3-small',
    'text-embedding-3-large',
    'text-embedding-ada-002',
  ])('%s uses cl100k_base', (model) => {
    expect(encodingForModel(model)).toEqual({ encoding: 'cl100k_base', fallback: false });
  });

  it.each(['llama-3-70b', 'claude-3-5-sonnet', 'o10-experimental', 'gpt-40', ''])(
    '%j is unknown: o200k_base, reported as a fallback',
    (model) => {
      expect(encodingForModel(model)).toEqual({ encoding: 'o200k_base', fallback: true });
    },
  );
});

describe('countTextTokens', () => {
  it('counts "tiktoken is great!" as 6 tokens in cl100k_base', () => {
    expect(countTextTokens('tiktoken is great!', 'gpt-4')).toEqual({
      tokens: 6,
      model: 'gpt-4',
      encoding: 'cl100k_base',
      fallback: false,
    });
  });

  it('reports the fallback for an unknown model', () => {
    expect(countTextTokens('hello', 'mystery-model')).toMatchObject({ encoding: 'o200k_base', fallback: true });
  });

  it('counts the empty string as 0 tokens', () => {
    expect(countTextTokens('', 'gpt-4o').tokens).toBe(0);
  });

  it('counts special-token text as plain characters without throwing', () => {
    for (const model of ['gpt-4', 'gpt-4o']) {
      const special = countTextTokens('<|endoftext|>', model).tokens;
      expect(special).toBeGreaterThan(1);
      expect(countTextTokens('before <|endoftext|><|fim_prefix|> after', model).tokens).toBeGreaterThan(special);
    }
  });
});

describe('multi-part content', () => {
  it('counts text parts and ignores image parts', () => {
    const withParts: TokenMessage[] = [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'New synergies will help drive top-line growth.' },
          { type: 'image_url' },
          { type: 'text', text: 'Things working well together will increase revenue.' },
        ],
      },
    ];
    const expected =
      3 +
      countTextTokens('user', 'gpt-4o').tokens +
      countTextTokens('New synergies will help drive top-line growth.', 'gpt-4o').tokens +
      countTextTokens('Things working well together will increase revenue.', 'gpt-4o').tokens +
      3;
    expect(countMessageTokens(withParts, 'gpt-4o').tokens).toBe(expected);
  });

  it('counts a single text part like the same plain string', () => {
    const asString = countMessageTokens([{ role: 'user', content: 'tiktoken is great!' }], 'gpt-4').tokens;
    const asParts = countMessageTokens([{ role: 'user', content: [{ type: 'text', text: 'tiktoken is great!' }] }], 'gpt-4').tokens;
    expect(asParts).toBe(asString);
  });

  it('counts null content and a null name as absent', () => {
    const bare = countMessageTokens([{ role: 'assistant', content: null, name: null }], 'gpt-4').tokens;
    expect(bare).toBe(3 + countTextTokens('assistant', 'gpt-4').tokens + 3);
  });
});

describe('countTokens', () => {
  it('counts text', () => {
    expect(countTokens({ model: 'gpt-4', text: 'tiktoken is great!' }).tokens).toBe(6);
  });

  it('counts messages', () => {
    expect(countTokens({ model: 'gpt-4o', messages: cookbookMessages, text: null }).tokens).toBe(124);
  });

  it('rejects neither text nor messages with BAD_USER_INPUT', () => {
    expect(codeOf(() => countTokens({ model: 'gpt-4o' }))).toBe('BAD_USER_INPUT');
    expect(codeOf(() => countTokens({ model: 'gpt-4o', text: null, messages: null }))).toBe('BAD_USER_INPUT');
  });

  it('rejects both text and messages with BAD_USER_INPUT', () => {
    expect(codeOf(() => countTokens({ model: 'gpt-4o', text: 'hi', messages: [] }))).toBe('BAD_USER_INPUT');
  });

  it('rejects a blank model with BAD_USER_INPUT', () => {
    expect(codeOf(() => countTokens({ model: '  ', text: 'hi' }))).toBe('BAD_USER_INPUT');
  });
});


function randomLetters(length: number, seed: number): string {
  const random = randomGenerator(seed);
  let text = '';
  for (let index = 0; index < length; index++) text += String.fromCharCode(97 + Math.floor(random() * 26));
  return text;
}

const paragraphs = [
  'The gateway records every call with its model, its latency and the tokens it used, so that a tenant can see',
  "what it spends. When the provider fails, the call is retried with backoff; if it still fails, the error's",
  'code says why. function retry(attempt) {\n  return Math.min(2 ** attempt * 100, 5_000);\n}\n',
  '日本語のテキストも、絵文字 🎉 も、数字 1234567 も数えます。',
  '    indented line\twith tabs\r\n\r\n',
];

/** About `length` characters of prose, code, numbers and unicode, varied so that few pieces repeat exactly. */
function ordinaryText(length: number, seed: number): string {
  const random = randomGenerator(seed);
  const parts: string[] = [];
  let size = 0;
  while (size < length) {
    const part = `${paragraphs[Math.floor(random() * paragraphs.length)]} ${Math.floor(random() * 1e6)}${randomLetters(
      1 + Math.floor(random() * 8),
      Math.floor(random() * 1e9),
    )} `;
    parts.push(part);
    size += part.length;
  }
  return parts.join('').slice(0, length);
}

describe('long inputs count in near-linear time', () => {
  // The expected counts are OpenAI's tiktoken 0.14.0 (Python) on the same strings, built from js-tiktoken's rank
  // files: js-tiktoken itself needs about half a minute for the first one. The bounds are generous for a loaded
  // machine; on an idle one each count takes tens of milliseconds.
  const megabyte = ordinaryText(1 << 20, 3);

  it.each([
    ['gpt-4o', '64,000 times the letter a', 'a'.repeat(64_000), 8000],
    ['gpt-4', '64,000 times the letter a', 'a'.repeat(64_000), 8000],
    ['gpt-4o', '64,000 random letters without a space', randomLetters(64_000, 1), 33_218],
    ['gpt-4', '64,000 random letters without a space', randomLetters(64_000, 1), 34_619],
    ['gpt-4o', 'a megabyte of prose, code and unicode', megabyte, 339_427],
    ['gpt-4', 'a megabyte of prose, code and unicode', megabyte, 345_446],
  ] as const)('%s: %s in under a second', (model, _label, text, tokens) => {
    countTextTokens('', model); // builds the encoder outside the timed count
    const started = performance.now();
    const result = countTextTokens(text, model);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(result.tokens).toBe(tokens);
  });
});

describe('asynchronous counts', () => {
  /** Counts the event loop turns that run while `work` is pending. */
  async function turnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
    let turns = 0;
    let pending = true;
    const tick = () => {
      turns++;
      if (pending) setImmediate(tick);
    };
    setImmediate(tick);
    const result = await work();
    pending = false;
    return { result, turns };
  }

  it('equal the synchronous counts', async () => {
    for (const model of ['gpt-4o', 'gpt-4', 'gpt-3.5-turbo-0301']) {
      expect(await countMessageTokensAsync(cookbookMessages, model)).toEqual(countMessageTokens(cookbookMessages, model));
      expect(await countTextTokensAsync('tiktoken is great!', model)).toEqual(countTextTokens('tiktoken is great!', model));
      expect(await countTokensAsync({ model, messages: cookbookMessages })).toEqual(countTokens({ model, messages: cookbookMessages }));
      expect(await countTokensAsync({ model, text: '<|endoftext|>' })).toEqual(countTokens({ model, text: '<|endoftext|>' }));
    }
  });

  it('give the event loop turns while counting a megabyte of text', async () => {
    const text = ordinaryText(1 << 20, 5);
    const { result, turns } = await turnsDuring(() => countTextTokensAsync(text, 'gpt-4o'));
    expect(result.tokens).toBe(countTextTokens(text, 'gpt-4o').tokens);
    expect(turns).toBeGreaterThan(5);
  });

  it('give the event loop turns inside one long word', async () => {
    const text = 'a'.repeat(1 << 20);
    const { result, turns } = await turnsDuring(() => countTextTokensAsync(text, 'gpt-4'));
    expect(result.tokens).toBe(countTextTokens(text, 'gpt-4').tokens);
    expect(turns).toBeGreaterThan(5);
  });

  it('give the event loop turns across many messages that are each short', async () => {
    const messages = Array.from({ length: 2000 }, (_, index) => ({ role: 'user', content: ordinaryText(500, index) }));
    const { result, turns } = await turnsDuring(() => countMessageTokensAsync(messages, 'gpt-4o'));
    expect(result).toEqual(countMessageTokens(messages, 'gpt-4o'));
    expect(turns).toBeGreaterThan(5);
  });

  it('stay exact when several long counts interleave', async () => {
    const texts = ['a'.repeat(200_000), randomLetters(100_000, 9), ordinaryText(300_000, 11), '\ud800'.repeat(100_000)];
    const results = await Promise.all(texts.map((text) => countTextTokensAsync(text, 'gpt-4o')));
    expect(results.map((result) => result.tokens)).toEqual(texts.map((text) => countTextTokens(text, 'gpt-4o').tokens));
  });

  it('reject the same inputs as countTokens', async () => {
    await expect(countTokensAsync({ model: 'gpt-4o' })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
    await expect(countTokensAsync({ model: 'gpt-4o', text: 'hi', messages: [] })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
    await expect(countTokensAsync({ model: ' ', text: 'hi' })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
  });
});
