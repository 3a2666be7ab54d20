/**
 * The `tokenizer` part of `npm run bench`, and a command of its own:
 *
 *   npx tsx bench/tokenizers.ts          # installs gpt-tokenizer (once), prints the Markdown tables
 *   npx tsx bench/tokenizers.ts --json   # the same measurements as JSON, for bench/run.ts
 *
 * Callboard's encoder, gpt-tokenizer (latest, installed at run time into a temporary folder as the
 * bench installs Portkey) and js-tiktoken count the same texts in this one process; progress goes to
 * standard error. See bench/README.md.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Tiktoken } from 'js-tiktoken/lite';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import { BytePairEncoder } from '../src/llm/bpe.ts';
import { clearTokenCaches, countTextTokens } from '../src/llm/tokens.ts';
import { installIntoTemp, resolveVersion } from './lib/install.ts';
import { repositoryRoot } from './lib/processes.ts';
import {
  benchTexts,
  defaultTimingOptions,
  encodingNames,
  isTiming,
  median,
  modelFor,
  renderTokenizerReport,
  timeContenders,
  type Contender,
  type EncodingName,
  type Mode,
  type TimingRow,
  type TokenizerReport,
} from './lib/tokenizers.ts';

const environment = process.env;
const json = process.argv.includes('--json');
const log = (message: string) => process.stderr.write(`[tokenizer] ${message}\n`);
const options = {
  ...defaultTimingOptions,
  budgetMs: Number(environment.BENCH_TOKENIZER_BUDGET_MS || defaultTimingOptions.budgetMs),
  maxRounds: Number(environment.BENCH_TOKENIZER_ROUNDS || defaultTimingOptions.maxRounds),
};
const ranks = { o200k_base: o200kBase, cl100k_base: cl100kBase } as const;

/** gpt-tokenizer's per-encoding module (`gpt-tokenizer/encoding/<name>`), as much of it as the bench uses. */
interface GptTokenizerEncoding {
  countTokens(text: string): number;
  encode(text: string): number[];
  clearMergeCache(): void;
}

async function loadGptTokenizer(notes: string[]): Promise<{ version: string; encodings: Record<EncodingName, GptTokenizerEncoding> } | null> {
  const wanted = environment.BENCH_GPT_TOKENIZER_VERSION || 'latest';
  try {
    const version = resolveVersion('gpt-tokenizer', wanted);
    const folder = installIntoTemp(`callboard-bench-gpt-tokenizer-${version}`, [`gpt-tokenizer@${version}`], 'node_modules/gpt-tokenizer/package.json', log);
    const load = async (encoding: EncodingName) =>
      (await import(pathToFileURL(join(folder, `node_modules/gpt-tokenizer/esm/encoding/${encoding}.js`)).href)) as GptTokenizerEncoding;
    return { version, encodings: { o200k_base: await load('o200k_base'), cl100k_base: await load('cl100k_base') } };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    log(`could not install gpt-tokenizer@${wanted}; going on without it:\n${reason}`);
    notes.push(`gpt-tokenizer not measured: \`npm install gpt-tokenizer@${wanted}\` failed (${reason.split('\n')[0]!.slice(0, 200)}); js-tiktoken's counts are the reference.`);
    return null;
  }
}

async function main(): Promise<TokenizerReport> {
  const notes: string[] = [];
  const gptTokenizer = await loadGptTokenizer(notes);
  const jsTiktoken = { o200k_base: new Tiktoken(o200kBase), cl100k_base: new Tiktoken(cl100kBase) };
  // Token ids come from an encoder of the same class over the same ranks as tokens.ts builds (countTextTokens only counts).
  const idEncoders = { o200k_base: new BytePairEncoder(o200kBase), cl100k_base: new BytePairEncoder(cl100kBase) };
  const contenders: Contender[] = [
    { name: 'callboard', count: (text, encoding) => countTextTokens(text, modelFor[encoding]).tokens, clear: clearTokenCaches },
    ...(gptTokenizer
      ? [
          {
            name: 'gpt-tokenizer' as const,
            count: (text: string, encoding: EncodingName) => gptTokenizer.encodings[encoding].countTokens(text),
            clear: () => encodingNames.forEach((encoding) => gptTokenizer.encodings[encoding].clearMergeCache()),
          },
        ]
      : []),
    { name: 'js-tiktoken', count: (text, encoding) => jsTiktoken[encoding].encode(text, [], []).length, clear: () => undefined },
  ];

  const texts = benchTexts((text) => countTextTokens(text, modelFor.o200k_base).tokens);
  const rows: TimingRow[] = [];
  /** Median ms of each contender on the last hostile text of each kind and encoding, to skip hopeless runs on the longer one. */
  const shorter = new Map<string, { characters: number; medians: Record<string, number> }>();
  for (const { name, kind, text } of texts) {
    if (text.includes('<|')) throw new Error(`the text "${name}" holds special-token text, which gpt-tokenizer's countTokens refuses`);
    const modes: Mode[] = kind === 'ordinary' ? ['warm', 'cold'] : ['cold'];
    for (const encoding of encodingNames) {
      const kindKey = `${name.replace(/[\d,]+/, '#')} ${encoding}`;
      const previous = kind === 'hostile' ? shorter.get(kindKey) : undefined;
      const predicted = previous
        ? Object.fromEntries(Object.entries(previous.medians).map(([contender, value]) => [contender, value * (text.length / previous.characters) ** 2]))
        : {};
      let idsChecked = false;
      for (const mode of modes) {
        const results = timeContenders(contenders, text, encoding, mode, options, predicted);
        const counts = Object.entries(results).flatMap(([contender, outcome]) => (isTiming(outcome) ? [[contender, outcome.tokens] as const] : []));
        // The reference: gpt-tokenizer's count, else js-tiktoken's; none when both were skipped (too slow on the text).
        const referenceCount = counts.find(([contender]) => contender === 'gpt-tokenizer' || contender === 'js-tiktoken');
        const tokens = referenceCount?.[1] ?? counts[0]![1];
        const rowMismatches = counts.filter(([, count]) => count !== tokens).map(([contender, count]) => `${contender} counts ${count}, not ${tokens}`);
        const reference = gptTokenizer?.encodings[encoding];
        if (reference && isTiming(results['gpt-tokenizer']) && !idsChecked) {
          idsChecked = true;
          try {
            const expected = reference.encode(text);
            const ids = idEncoders[encoding].encode(text);
            const first = ids.findIndex((id, index) => id !== expected[index]);
            if (ids.length !== expected.length || first >= 0) rowMismatches.push(`Callboard's ids differ from gpt-tokenizer's encode (${ids.length} against ${expected.length} ids, first difference at ${first})`);
          } catch (error) {
            notes.push(`gpt-tokenizer's \`encode\` threw on "${name}" (${encoding}): ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}; its countTokens did not, and its count is the reference there.`);
          }
        }
        rows.push({ text: name, kind, characters: text.length, encoding, mode, tokens, checked: referenceCount !== undefined, results, mismatches: rowMismatches });
        const summary = Object.entries(results)
          .map(([contender, outcome]) => `${contender} ${isTiming(outcome) ? `${median(outcome.durations).toFixed(2)} ms (${outcome.durations.length} runs)` : 'skipped'}`)
          .join(', ');
        log(`${name}, ${encoding}, ${mode}: ${tokens} tokens; ${summary}${rowMismatches.length > 0 ? `; MISMATCH: ${rowMismatches.join('; ')}` : ''}`);
        if (kind === 'hostile') {
          // A contender skipped here is skipped on the longer text too.
          const medians = Object.fromEntries(Object.entries(results).map(([contender, outcome]) => [contender, isTiming(outcome) ? median(outcome.durations) : Infinity]));
          shorter.set(kindKey, { characters: text.length, medians });
        }
      }
    }
  }
  const versions = {
    'gpt-tokenizer': gptTokenizer?.version,
    // js-tiktoken's exports leave out its package.json.
    'js-tiktoken': (JSON.parse(readFileSync(join(repositoryRoot, 'node_modules/js-tiktoken/package.json'), 'utf8')) as { version: string }).version,
  };
  return { node: process.version, versions, notes, rows };
}

const report = await main();
process.stdout.write(json ? `${JSON.stringify(report)}\n` : `${renderTokenizerReport(report).join('\n')}\n`);
