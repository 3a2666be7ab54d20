import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pin } from './peers.ts';
import { repositoryRoot, track } from './processes.ts';
import { buildText, type TextStyle } from './scenarios.ts';

/*
 * The `tokenizer` part of the bench: Callboard's byte-pair encoder (what tokenCount runs) beside
 * gpt-tokenizer and js-tiktoken, in one process, on the same texts. Texts, timing and the
 * Markdown; bench/tokenizers.ts runs it.
 */

export type EncodingName = 'o200k_base' | 'cl100k_base';
export const encodingNames: EncodingName[] = ['o200k_base', 'cl100k_base'];
/** A model tokens.ts maps to each encoding. */
export const modelFor: Record<EncodingName, string> = { o200k_base: 'gpt-4o', cl100k_base: 'gpt-4' };

export type ContenderName = 'callboard' | 'gpt-tokenizer' | 'js-tiktoken';
export const contenderNames: ContenderName[] = ['callboard', 'gpt-tokenizer', 'js-tiktoken'];

export interface Contender {
  name: ContenderName;
  /** Token count of text in the encoding. */
  count(text: string, encoding: EncodingName): number;
  /** Empties the contender's caches of merged pieces (none for js-tiktoken, which keeps none). */
  clear(): void;
}

/** How a text is counted: warm (the same text over and over, caches full of its pieces) or cold (caches emptied before each count). */
export type Mode = 'warm' | 'cold';

export interface BenchText {
  name: string;
  /** ordinary: prose, code, non-Latin text, ~5,000 tokens; hostile: one "word" of thousands of characters. */
  kind: 'ordinary' | 'hostile';
  text: string;
}

/** ms per 5,000 tokens is what the tables compare. */
export const perTokens = 5000;

// ---------------------------------------------------------------------------------------------
// Texts

const chineseVocabulary = (
  '我们 你们 他们 今天 明天 昨天 时间 问题 服务 系统 模型 缓存 历史 答案 请求 回应 价格 成本 报告 市场 城市 国家 世界 ' +
  '水 电力 房子 音乐 学校 家庭 窗户 花园 信 数字 桌子 纸 故事 光 夜晚 早上 晚上 旅行 车站 简单 安静 明亮 沉重 短 小 ' +
  '大 公共 私人 工作 学习 研究 发展 经济 社会 文化 技术 数据 网络 用户 开发 需要 可以 已经 因为 所以 但是 如果 虽然 ' +
  '非常 一些 很多 一个 这个 那个 什么 怎么 为什么 没有 看到 知道 认为 觉得 开始 结束 继续 帮助 提供 使用 计算 处理 ' +
  '东京 北京 上海 河流 山 北方 南方 东方 西方 朋友 老师 学生 医生 公司 政府 银行 医院 图书馆 电话 电脑 手机 汽车'
).split(' ');

const russianVocabulary = (
  'и в не на я быть он с что а по это она этот к но они мы как из у который то за свой весь год от так о для ты же ' +
  'все тот мочь вы человек такой его сказать только или еще бы себя один как уже до время если сам когда другой вот ' +
  'говорить наш мой знать стать при чтобы дело жизнь кто первый очень два день её новый рука даже во со раз где там ' +
  'под можно ну какой после их работа без самый потом надо хотеть ли слово идти большой должен место иметь ничто ' +
  'система модель запрос ответ сервер история цена стоимость город страна мир вода дом музыка школа семья окно сад'
).split(' ');

export const chineseStyle: TextStyle = { vocabulary: chineseVocabulary, separator: '', end: '。', between: '', capitalize: false, comma: '，' };
export const russianStyle: TextStyle = { vocabulary: russianVocabulary, separator: ' ', end: '.', capitalize: true, comma: ',' };

/**
 * The largest of `build(1)`, `build(2)`, ... (texts that grow with their argument) that has at
 * most `tokens` tokens by `count`, found by bisection.
 */
export function fitToTokens(build: (size: number) => string, tokens: number, count: (text: string) => number, maxSize: number): string {
  let low = 1;
  let high = maxSize;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (count(build(middle)) <= tokens) low = middle;
    else high = middle - 1;
  }
  return build(low);
}

/** The TypeScript of src/ (tests left out), files in name order, one after another. */
function sourceCode(): string {
  const files: string[] = [];
  const walk = (folder: string) => {
    for (const entry of readdirSync(folder, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) files.push(path);
    }
  };
  walk(join(repositoryRoot, 'src'));
  return files.map((path) => readFileSync(path, 'utf8')).join('\n');
}

/** `length` letters a-z from a fixed seed, no spaces. */
export function randomLetters(length: number, seed: number): string {
  return randomCharacters(length, seed, 97, 26);
}

/** `length` characters drawn from [first, first + span) by a fixed-seed generator. */
function randomCharacters(length: number, seed: number, first: number, span: number): string {
  let state = seed;
  const codes = new Array<number>(length);
  for (let index = 0; index < length; index++) {
    state = (state * 1103515245 + 12345) % 2147483648;
    codes[index] = first + Math.floor((state / 2147483648) * span);
  }
  let text = '';
  for (let index = 0; index < length; index += 4096) text += String.fromCharCode(...codes.slice(index, index + 4096));
  return text;
}

/**
 * The ordinary texts, each the longest prefix (by words or lines) of at most `tokens` tokens in
 * o200k_base by `count`, and the hostile ones at `hostileSizes` characters.
 */
export function benchTexts(count: (text: string) => number, tokens = perTokens, hostileSizes = [1_000, 8_000, 64_000]): BenchText[] {
  const readme = readFileSync(join(repositoryRoot, 'README.md'), 'utf8').split('\n');
  const code = sourceCode().split('\n');
  const ordinary: BenchText[] = [
    { name: "English prose (the bench's buildText, as the tokens scenario)", kind: 'ordinary', text: fitToTokens((words) => buildText(words), tokens, count, 20_000) },
    { name: "Callboard's README.md, from the top (Markdown prose)", kind: 'ordinary', text: fitToTokens((lines) => readme.slice(0, lines).join('\n'), tokens, count, readme.length) },
    { name: 'TypeScript, src/ from the top (Callboard\'s own code)', kind: 'ordinary', text: fitToTokens((lines) => code.slice(0, lines).join('\n'), tokens, count, code.length) },
    { name: 'Chinese (generated sentences)', kind: 'ordinary', text: fitToTokens((words) => buildText(words, chineseStyle), tokens, count, 20_000) },
    { name: 'Russian (generated sentences)', kind: 'ordinary', text: fitToTokens((words) => buildText(words, russianStyle), tokens, count, 20_000) },
  ];
  const hostile: BenchText[] = hostileSizes.flatMap((size) => [
    { name: `one letter ${size.toLocaleString('en')} times ("aaa...")`, kind: 'hostile' as const, text: 'a'.repeat(size) },
    { name: `${size.toLocaleString('en')} random letters a-z, no space`, kind: 'hostile' as const, text: randomLetters(size, 1) },
    { name: `${size.toLocaleString('en')} random CJK ideographs, no punctuation`, kind: 'hostile' as const, text: randomCharacters(size, 2, 0x4e00, 0x5200) },
  ]);
  return [...ordinary, ...hostile];
}

// ---------------------------------------------------------------------------------------------
// Timing

export interface Timing {
  /** Sorted CPU times of the timed counts, ms. */
  durations: number[];
  tokens: number;
}

export type Outcome = Timing | { skipped: string };

export interface TimingRow {
  text: string;
  kind: BenchText['kind'];
  characters: number;
  encoding: EncodingName;
  mode: Mode;
  /** gpt-tokenizer's count (js-tiktoken's when gpt-tokenizer is missing or skipped; Callboard's when both are). */
  tokens: number;
  /** False when no peer counted the text (each too slow on it): nothing to check Callboard's count against. */
  checked: boolean;
  results: Partial<Record<ContenderName, Outcome>>;
  /** Empty when every count, and Callboard's token ids, equal the reference's. */
  mismatches: string[];
}

export interface TimingOptions {
  /** Timed rounds per row at most (each round counts the text once with each contender). */
  maxRounds: number;
  /** CPU time a row may take, shared equally by the contenders (each takes at least `minRuns` timings). */
  budgetMs: number;
  minRuns: number;
  /** A contender is not run on a text where a run would take longer than this, by its time on a shorter text of the same kind, if its time grew with the square of the length. */
  skipAboveMs: number;
}

export const defaultTimingOptions: TimingOptions = { maxRounds: 200, budgetMs: 1000, minRuns: 5, skipAboveMs: 2000 };

export function median(sorted: readonly number[]): number {
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * CPU time of this process so far (user + system, every thread: the garbage collector's helpers too), ms. Counts
 * are timed by it rather than by the clock, which on a shared machine also runs while other processes hold the
 * core; on an idle core the two agree.
 */
export function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

export function isTiming(outcome: Outcome | undefined): outcome is Timing {
  return outcome !== undefined && 'durations' in outcome;
}

/**
 * Times each contender on `text`: one untimed count (its tokens) and warm-up counts, then rounds
 * in which every contender counts the text once in turn (so that the machine's changing load
 * weighs on all alike), until `maxRounds` or the budget; in cold mode each contender's caches are
 * emptied before each of its counts, outside the timing. The median is what counts.
 */
export function timeContenders(contenders: Contender[], text: string, encoding: EncodingName, mode: Mode, options: TimingOptions, predicted: Partial<Record<ContenderName, number>> = {}): Partial<Record<ContenderName, Outcome>> {
  const results: Partial<Record<ContenderName, Outcome>> = {};
  const active: { contender: Contender; durations: number[]; spent: number; tokens: number; slow: boolean }[] = [];
  for (const contender of contenders) {
    const guess = predicted[contender.name];
    if (guess !== undefined && guess > options.skipAboveMs) {
      const reason = Number.isFinite(guess) ? `about ${(guess / 1000).toFixed(0)} s a count, from its time on the shorter text if quadratic` : 'as on the shorter text';
      results[contender.name] = { skipped: reason };
      continue;
    }
    contender.clear();
    const started = cpuMs();
    const tokens = contender.count(text, encoding);
    const first = cpuMs() - started;
    // A slow contender (a count over a fifth of the budget) is timed once: its first count when cold, a second one when warm.
    const slow = first > options.budgetMs / options.minRuns;
    if (!slow) {
      // Warm-up: about a tenth of the budget, so that the timed counts run optimised code.
      const warmUntil = performance.now() + options.budgetMs / 10;
      for (let index = 0; index < 20 && performance.now() < warmUntil; index++) {
        if (mode === 'cold') contender.clear();
        contender.count(text, encoding);
      }
    }
    active.push({ contender, durations: slow && mode === 'cold' ? [first] : [], spent: 0, tokens, slow });
  }
  // Each contender has an equal share of the budget: it takes rounds until it has spent its share (and has minRuns
  // timings), so that a slow one does not cut short the rounds of the fast ones.
  const share = options.budgetMs / Math.max(active.length, 1);
  for (let round = 0; round < options.maxRounds; round++) {
    let counted = false;
    for (const entry of active) {
      if (entry.slow ? entry.durations.length >= 1 : entry.durations.length >= options.minRuns && entry.spent > share) continue;
      if (mode === 'cold') entry.contender.clear();
      const before = cpuMs();
      entry.contender.count(text, encoding);
      const duration = cpuMs() - before;
      entry.durations.push(duration);
      entry.spent += duration;
      counted = true;
    }
    if (!counted) break;
  }
  for (const entry of active) results[entry.contender.name] = { durations: entry.durations.sort((a, b) => a - b), tokens: entry.tokens };
  return results;
}

// ---------------------------------------------------------------------------------------------
// Report

export interface TokenizerReport {
  node: string;
  versions: Partial<Record<ContenderName, string>>;
  notes: string[];
  rows: TimingRow[];
}

const contenderTitles: Record<ContenderName, string> = { callboard: 'Callboard', 'gpt-tokenizer': 'gpt-tokenizer', 'js-tiktoken': 'js-tiktoken' };

const ms = (value: number) => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2));

function perFiveThousand(outcome: Outcome | undefined, tokens: number): string {
  if (outcome === undefined) return '–';
  if (!isTiming(outcome)) return 'skipped';
  return ms((median(outcome.durations) * perTokens) / tokens);
}

function ratio(row: TimingRow, over: ContenderName): string {
  const base = row.results.callboard;
  const other = row.results[over];
  if (!isTiming(base) || !isTiming(other)) return '–';
  return `${(median(other.durations) / median(base.durations)).toFixed(1)}×`;
}

const exactness = (row: TimingRow) =>
  row.mismatches.length > 0 ? `**NO**: ${row.mismatches.join('; ')}` : row.checked ? 'yes' : 'not checked (no peer ran)';

/** The Markdown section for bench/results.md (or the standalone run's output). */
export function renderTokenizerReport(report: TokenizerReport): string[] {
  const lines: string[] = [];
  const versions = contenderNames
    .filter((name) => name !== 'callboard' && report.versions[name])
    .map((name) => `${contenderTitles[name]} ${report.versions[name]}`)
    .join(', ');
  lines.push(
    "## tokenCount's encoder beside gpt-tokenizer and js-tiktoken",
    '',
    `In one process (Node ${report.node}), on the same texts: Callboard's \`countTextTokens\` (the byte-pair encoder of \`src/llm/bpe.ts\` that ` +
      `tokenCount runs, there in slices), ${versions || 'no peer'}. Each text is counted in rounds, every tokenizer once per round in turn, ` +
      'after warm-up; the figure is the median CPU time of a count (user + system, from `process.cpuUsage()`: on a shared machine the clock also runs while other processes hold the core), in ms per 5,000 tokens (the time times 5,000 over the text\'s tokens in that encoding). ' +
      '"Warm": the same text over and over, each tokenizer\'s cache of merged pieces full of its words (gpt-tokenizer keeps up to 100,000 pieces, ' +
      'Callboard 8,192 pieces of under 128 bytes; js-tiktoken keeps none); "cold": the caches emptied before each count. ' +
      '"Exact": every count equals gpt-tokenizer\'s (js-tiktoken\'s where gpt-tokenizer was skipped), and Callboard\'s token ids equal gpt-tokenizer\'s `encode`. ' +
      'Ratios are the other tokenizer\'s time over Callboard\'s: above 1, Callboard is faster.',
    '',
  );
  for (const note of report.notes) lines.push(`- ${note}`);
  if (report.notes.length > 0) lines.push('');

  const ordinary = report.rows.filter((row) => row.kind === 'ordinary');
  if (ordinary.length > 0) {
    lines.push(
      '| Text | encoding | tokens | Callboard warm | gpt-tokenizer warm | js-tiktoken | gpt-tokenizer ÷ Callboard, warm | Callboard cold | gpt-tokenizer cold | gpt-tokenizer ÷ Callboard, cold | js-tiktoken ÷ Callboard | exact |',
      '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|',
    );
    for (const warm of ordinary.filter((row) => row.mode === 'warm')) {
      const cold = ordinary.find((row) => row.mode === 'cold' && row.text === warm.text && row.encoding === warm.encoding);
      lines.push(
        `| ${warm.text} | ${warm.encoding} | ${warm.tokens} | ${perFiveThousand(warm.results.callboard, warm.tokens)} | ` +
          `${perFiveThousand(warm.results['gpt-tokenizer'], warm.tokens)} | ${perFiveThousand(warm.results['js-tiktoken'], warm.tokens)} | ${ratio(warm, 'gpt-tokenizer')} | ` +
          `${cold ? perFiveThousand(cold.results.callboard, cold.tokens) : '–'} | ${cold ? perFiveThousand(cold.results['gpt-tokenizer'], cold.tokens) : '–'} | ` +
          `${cold ? ratio(cold, 'gpt-tokenizer') : '–'} | ${ratio(warm, 'js-tiktoken')} | ${exactness(cold && cold.mismatches.length > 0 ? cold : warm)} |`,
      );
    }
    lines.push('');
  }

  const hostile = report.rows.filter((row) => row.kind === 'hostile');
  if (hostile.length > 0) {
    lines.push(
      'Hostile inputs, one "word" each (cold: a warm cache would hold the whole word, and a count would be one lookup). ' +
        'Milliseconds per count, not per 5,000 tokens; from the shorter to the longer text of a kind the time of a near-linear ' +
        'tokenizer grows about as the length (8×), that of a quadratic one as its square (64×).',
      '',
      '| Text | encoding | tokens | Callboard ms | gpt-tokenizer ms | js-tiktoken ms | gpt-tokenizer ÷ Callboard | exact |',
      '|---|---|--:|--:|--:|--:|--:|---|',
    );
    const cell = (outcome: Outcome | undefined) => (outcome === undefined ? '–' : isTiming(outcome) ? ms(median(outcome.durations)) + (outcome.durations.length < 3 ? ` (${outcome.durations.length} run${outcome.durations.length === 1 ? '' : 's'})` : '') : `skipped (${outcome.skipped})`);
    for (const row of hostile) {
      lines.push(
        `| ${row.text} | ${row.encoding} | ${row.tokens} | ${cell(row.results.callboard)} | ${cell(row.results['gpt-tokenizer'])} | ${cell(row.results['js-tiktoken'])} | ${ratio(row, 'gpt-tokenizer')} | ${exactness(row)} |`,
      );
    }
    lines.push('');
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// The part of `npm run bench`

export const tokenizerPartName = 'tokenizer';
const entryPath = fileURLToPath(new URL('../tokenizers.ts', import.meta.url));
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/**
 * Runs bench/tokenizers.ts in a process of its own (pinned to `cores` when given: the measured
 * server's core, idle meanwhile), its progress to `log`; resolves with its report.
 */
export async function measureTokenizers(log: (message: string) => void, cores: string | null): Promise<TokenizerReport> {
  // The whole environment: npm, which installs gpt-tokenizer, may need its settings (a proxy, a registry).
  const child = spawn(process.execPath, ['--import', tsxLoader, entryPath, '--json'], { cwd: repositoryRoot, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let report: TokenizerReport | undefined;
  const handle = track(child, (line) => {
    if (line.startsWith('{')) report = JSON.parse(line) as TokenizerReport;
    else if (line.trim() !== '') log(line.replace(/^\[tokenizer\] /, 'tokenizer: '));
  });
  if (cores !== null) pin(handle.pid, cores);
  const code = await handle.exited;
  if (code !== 0 || !report) throw new Error(`bench/tokenizers.ts exited with ${code}:\n${handle.output.slice(-20).join('\n')}`);
  return report;
}
