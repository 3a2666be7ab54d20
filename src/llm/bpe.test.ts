import { Tiktoken } from 'js-tiktoken/lite';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import { describe, expect, it } from 'vitest';
import { BytePairEncoder, EncodeJob, type RankFile, withTiktokenWhitespace } from './bpe.ts';
import { randomGenerator } from '../../test/support/seeded-random.ts';

// js-tiktoken is the reference: it is OpenAI's tiktoken algorithm, quadratic on long words, so the generated
// inputs keep words short enough (a few hundred characters) for it to stay fast. It is given tiktoken's own
// whitespace (see withTiktokenWhitespace), checked on its own below against ids from OpenAI's tiktoken.


const english = [
  'The quick brown fox jumps over the lazy dog.',
  "Let's circle back when we have more bandwidth; we're sure it'll work, isn't it? I'M SURE THEY'LL AGREE.",
  'New synergies will help drive top-line growth.',
  'Mr. O\'Neil said: "Hello, world!" -- and left (quietly).',
  'tiktoken is great!',
  'e.g. i.e. etc. U.S.A. Dr. Smith\'s',
];
const code = [
  'function foo(x) {\n  return x * 2;\n}\n',
  'const value = items.map((item) => item.id).filter(Boolean); // why not\r\n',
  'def main():\n    for i in range(10):\n        print(f"{i:>4}")\n\n\n',
  '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.2}',
  'https://example.com/path/to/file.ts?query=1&other=two#anchor',
  'src/llm/tokens.ts:42:7 - error TS2322: Type \'string\' is not assignable',
  '<div class="a">&nbsp;</div>\t\t<!-- comment -->',
  'SELECT id, "createdAt" FROM "LlmCall" WHERE tenant = $1 ORDER BY 2 DESC;',
];
const unicode = [
  '日本語の文章です。東京は大きい。',
  '한국어 문장입니다',
  'مرحبا بالعالم',
  'नमस्ते दुनिया',
  'สวัสดีชาวโลก',
  'Ελληνικά και кириллица',
  'e\u0301cole cafe\u0301 naïve façade',
  '👨‍👩‍👧‍👦 👍🏽 🇫🇷🇯🇵 🎉✨',
  'ǅungla ʰaspirated ᾈ Ⅻ ½ ² ٣٤٥ １２３',
  '\u00a0\u2003\u3000\u200b\ufeff',
  '\u0300\u0301 combining first',
];
const specials = ['<|endoftext|>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|endofprompt|>'];
const whitespaceUnits = [' ', ' ', ' ', '\t', '\n', '\r\n', '\r', '\u00a0', '\u2003', '\u3000', '\u000b', '\f', '\u2028'];
const repeatedUnits = ['a', 'z', 'A', 'é', ' ', '!', '7', '日', '\n', '🎉', 'ab', 'xY', '\ud800', '.', '-'];

function generate(random: () => number): string {
  const pick = <T,>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const integer = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  const fragments: Array<() => string> = [
    () => pick(english),
    () => pick(code),
    () => pick(unicode),
    () => pick(specials),
    () => Array.from({ length: integer(1, 12) }, () => pick(whitespaceUnits)).join(''),
    () => Array.from({ length: integer(1, 24) }, () => String(integer(0, 9))).join(''),
    () => `${integer(0, 99999)}.${integer(0, 9999)} ${integer(1, 9)},${integer(100, 999)},${integer(100, 999)}`,
    // Lone and reversed surrogates: UTF-8 encoding turns each into U+FFFD, as TextEncoder does.
    () => pick(['\ud800', '\udfff', '\udc00\ud800', 'x\ud83d', '\ud83dx', '\ude00']),
    () => pick(repeatedUnits).repeat(integer(2, 200)),
    () => Array.from({ length: integer(1, 300) }, () => String.fromCharCode(97 + integer(0, 25))).join(''),
    () => Array.from({ length: integer(1, 120) }, () => String.fromCharCode(integer(0, 255))).join(''),
    () => Array.from({ length: integer(1, 60) }, () => String.fromCharCode(integer(0, 0xffff))).join(''),
    () => Array.from({ length: integer(1, 40) }, () => String.fromCodePoint(integer(0x10000, 0x10ffff))).join(''),
  ];
  let text = '';
  const count = integer(1, 10);
  for (let index = 0; index < count; index++) {
    text += pick(fragments)();
    if (random() < 0.5) text += pick([' ', '', '\n', "'s ", "'LL", '.', ', ']);
  }
  return text;
}

const fixed = [
  '',
  ' ',
  'a',
  'hello world',
  '  \n\n  x  y   \t\n',
  "I'm here, you're there, they'd've gone. He'S",
  'a'.repeat(1000),
  ' '.repeat(700) + 'x',
  'abcdefghijklmnopqrstuvwxyz'.repeat(20),
  '!'.repeat(500),
  '\ud800'.repeat(100),
  '1234567890'.repeat(50),
  String.fromCharCode(...Array.from({ length: 400 }, (_, index) => (index * 7919) % 256)),
];

describe.each([
  ['o200k_base', o200kBase],
  ['cl100k_base', cl100kBase],
] as const)('%s gives js-tiktoken\'s token ids', (_name, ranks: RankFile) => {
  const reference = new Tiktoken({ ...ranks, pat_str: withTiktokenWhitespace(ranks.pat_str) });
  const encoder = new BytePairEncoder(ranks);
  // The two merge strategies must agree everywhere, not only on the lengths where each is used.
  const heapOnly = new BytePairEncoder(ranks, { heapFromBytes: 2 });
  const rescanOnly = new BytePairEncoder(ranks, { heapFromBytes: Infinity });
  // And the hand-written ASCII pre-tokenizer must find the regex's pieces.
  const regexOnly = new BytePairEncoder(ranks, { asciiScanner: false });

  function expectSameAsReference(text: string): void {
    const expected = reference.encode(text, [], []);
    const label = JSON.stringify(text.slice(0, 200));
    expect(encoder.encode(text), label).toEqual(expected);
    expect(encoder.count(text), label).toBe(expected.length);
    expect(heapOnly.encode(text), label).toEqual(expected);
    expect(heapOnly.count(text), label).toBe(expected.length);
    expect(rescanOnly.encode(text), label).toEqual(expected);
    expect(rescanOnly.count(text), label).toBe(expected.length);
    expect(regexOnly.encode(text), label).toEqual(expected);
  }

  it('on hand-picked texts: empty, whitespace, contractions, long runs, lone surrogates, bytes as characters', () => {
    for (const text of fixed) expectSameAsReference(text);
  });

  it('on every fragment of the corpus alone', () => {
    for (const text of [...english, ...code, ...unicode, ...specials, ...whitespaceUnits, ...repeatedUnits]) {
      expectSameAsReference(text);
    }
  });

  it('on 400 generated mixtures of English, code, whitespace, numbers, unicode and random characters', () => {
    const seed = 20_251_201;
    const random = randomGenerator(seed);
    for (let index = 0; index < 400; index++) expectSameAsReference(generate(random));
  });

  it('on 2,000 generated strings of the characters the pre-tokenizer treats apart, mostly ASCII', () => {
    // Apostrophes and contraction letters, every ASCII whitespace, slashes, digits, case changes, control
    // characters, and a few non-ASCII letters, digits, spaces and marks where the ASCII scanner hands over.
    const alphabet = [..."'''sStTrReEvVmMlLdDaZ09 \t\n\r\v\f/.,!-_\u0000\u001c\u007f", 'é', 'É', '²', '\u00a0', '\u2028', '\u0301', '日', '\ud800'];
    const random = randomGenerator(99);
    for (let index = 0; index < 2000; index++) {
      const length = 1 + Math.floor(random() * 24);
      let text = '';
      for (let position = 0; position < length; position++) text += alphabet[Math.floor(random() * alphabet.length)];
      expectSameAsReference(text);
    }
  });

  it('gives the same ids when the work is cut into tiny slices, as the asynchronous counts do', () => {
    const random = randomGenerator(7);
    const texts = [...fixed, ...Array.from({ length: 40 }, () => generate(random))];
    for (const text of texts) {
      for (const budget of [1, 5, 97]) {
        const counting = new EncodeJob(text, null);
        const encoding = new EncodeJob(text, []);
        let rounds = 0;
        while (!counting.done) {
          heapOnly.advance(counting, budget);
          rounds++;
        }
        while (!encoding.done) heapOnly.advance(encoding, budget);
        const expected = heapOnly.encode(text);
        expect(encoding.output).toEqual(expected);
        expect(counting.tokens).toBe(expected.length);
        if (text.length > 200) expect(rounds).toBeGreaterThan(1);
      }
    }
  });
});

describe("tiktoken's whitespace, where JavaScript's \\s differs", () => {
  const o200k = new BytePairEncoder(o200kBase);
  const cl100k = new BytePairEncoder(cl100kBase);
  // Token ids from OpenAI's tiktoken 0.14.0 (Python), built from js-tiktoken's rank files: U+0085 is whitespace
  // there and U+FEFF is not, the other way round from JavaScript's \s, so js-tiktoken itself splits these apart.
  it.each([
    ['a\u0085/x', [64, 126, 227, 22739], [64, 126, 227, 11009]],
    ['x\u0085\u0085 y', [87, 126, 227, 126, 227, 342], [87, 126, 227, 126, 227, 379]],
    ['a \ufeff b', [64, 71280, 287], [64, 76880, 293]],
    ['\ufeff\ufeff  x', [135153, 220, 1215], [3305, 3305, 220, 865]],
    ['end\u0085', [419, 126, 227], [408, 126, 227]],
  ])('%j', (text, o200kIds, cl100kIds) => {
    expect(o200k.encode(text)).toEqual(o200kIds);
    expect(cl100k.encode(text)).toEqual(cl100kIds);
  });

  it('is where js-tiktoken, with JavaScript\'s \\s, differs', () => {
    expect(new Tiktoken(o200kBase).encode('a\u0085/x', [], [])).not.toEqual([64, 126, 227, 22739]);
  });
});

describe('the cache of merged pieces', () => {
  // Pairs of pieces with the same 32-bit FNV-1a hash (so the same cache slot and key) but other bytes and other
  // token counts: a cache that trusted the hash would give the first one's count for the second.
  it.each([
    ['wygqnhfot', 'pdwgxfenz'],
    ['kfcccajei', 'gniqpxkih'],
  ])('tells %s from %s, which share a hash', (first, second) => {
    for (const ranks of [o200kBase, cl100kBase]) {
      const reference = new Tiktoken(ranks);
      const encoder = new BytePairEncoder(ranks);
      for (const text of [first, second, first, `${second} ${first} ${second}`]) {
        expect(encoder.count(text), text).toBe(reference.encode(text, [], []).length);
      }
    }
  });

  it('stays exact when pieces evict each other and the pool starts over, counted once and again', () => {
    // 3,000 distinct pieces of 30 Chinese characters, 90 bytes each: more than the pool's 256 KiB and the cache's
    // 8,192 slots hold, so entries are overwritten and the pool is emptied while the text is counted.
    const random = randomGenerator(5);
    const pieces = Array.from({ length: 3000 }, () =>
      Array.from({ length: 30 }, () => String.fromCharCode(0x4e00 + Math.floor(random() * 2000))).join(''),
    );
    const text = pieces.join('。');
    const reference = new Tiktoken(o200kBase);
    const expected = reference.encode(text, [], []).length;
    const encoder = new BytePairEncoder(o200kBase);
    expect(encoder.count(text)).toBe(expected);
    expect(encoder.count(text)).toBe(expected);
    // Half the pieces again, in another order, after the whole text went through the cache.
    const some = pieces.filter((_, index) => index % 2 === 1).reverse().join('。');
    expect(encoder.count(some)).toBe(reference.encode(some, [], []).length);
    encoder.clearCaches();
    expect(encoder.count(text)).toBe(expected);
  });
});

describe('hostile inputs count in near-linear time, and exactly', () => {
  const random = randomGenerator(17);
  const randomOf = (first: number, span: number) => (length: number) => {
    let text = '';
    for (let index = 0; index < length; index++) text += String.fromCharCode(first + Math.floor(random() * span));
    return text;
  };
  // One "word" each, or (spaces, punctuation) one run the pre-tokenizer cannot cut short.
  // The third column: how long a text js-tiktoken, quadratic on one word, checks in under a second or two.
  const kinds: Array<[string, (length: number) => string, number]> = [
    ['one letter', (length) => 'a'.repeat(length), 1500],
    ['random letters a-z', randomOf(97, 26), 1500],
    ['random CJK ideographs', randomOf(0x4e00, 0x5200), 500],
    ['one non-ASCII capital', (length) => 'É'.repeat(length), 1500],
    ['spaces then a letter', (length) => `${' '.repeat(length - 1)}x`, 1500],
    ['one punctuation mark', (length) => '!'.repeat(length), 1500],
    ['random digits', randomOf(48, 10), 1500],
  ];

  const cpuMs = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };

  /**
   * The least CPU time of five cold counts, ms: CPU time rather than the clock, which on a shared machine also runs
   * while other processes have the core; the least, being the least disturbed (caches of the CPU, collections).
   */
  function fastest(encoder: BytePairEncoder, text: string): number {
    let best = Infinity;
    for (let run = 0; run < 5; run++) {
      encoder.clearCaches();
      const started = cpuMs();
      encoder.count(text);
      best = Math.min(best, cpuMs() - started);
    }
    return best;
  }

  describe.each([
    ['o200k_base', o200kBase],
    ['cl100k_base', cl100kBase],
  ] as const)('%s', (_name, ranks: RankFile) => {
    const encoder = new BytePairEncoder(ranks);
    const reference = new Tiktoken({ ...ranks, pat_str: withTiktokenWhitespace(ranks.pat_str) });

    it.each(kinds)('%s: %i characters give js-tiktoken\'s ids', (_kind, build, length) => {
      const text = build(length);
      expect(encoder.encode(text)).toEqual(reference.encode(text, [], []));
      expect(encoder.count(text)).toBe(reference.encode(text, [], []).length);
    });

    it.each(kinds)('%s: 8 times the characters take well under 64 times as long', (_kind, build, _length) => {
      const short = build(16_000);
      const long = build(128_000);
      // Warm-up, so that both are timed in optimised code.
      fastest(encoder, short);
      fastest(encoder, long);
      const ratio = fastest(encoder, long) / Math.max(fastest(encoder, short), 0.05);
      // Linear is 8, n log n a little more, and memory caches outgrown by the longer text add some; quadratic is 64.
      expect(ratio).toBeLessThan(24);
    });
  });
});
