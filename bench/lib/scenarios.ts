import type { LoadTarget } from './load.ts';

const json = { 'content-type': 'application/json' };

const sendMessageDocument = `mutation Send($input: SendMessageInput!) {
  sendMessage(input: $input) {
    message { content }
    model
    cacheStatus
    attempts
    latencyMs
    usage { promptTokens completionTokens totalTokens }
    call { id }
  }
}`;

const systemPrompt = 'You are a concise assistant. Answer in one sentence.';

/** A chat call's input as a caller would send it; `question` is the only part that varies. */
function chatInput(question: string) {
  return {
    messages: [
      { role: 'SYSTEM', content: systemPrompt },
      { role: 'USER', content: question },
    ],
    cache: 'USE',
    tags: ['bench'],
  };
}

/** The same conversation in OpenAI's wire format. */
function openAiMessages(question: string) {
  return [
    { role: 'system', content: systemPrompt },
    { role: 'user', content: question },
  ];
}

/** The body Callboard sends upstream for `chatInput` under the default settings (MODEL, TEMPERATURE, ...). */
export function upstreamChatBody(question: string) {
  return {
    model: 'gpt-4o-mini',
    messages: openAiMessages(question),
    temperature: 1.5,
    max_tokens: 4000,
    frequency_penalty: 0,
    presence_penalty: 0,
  };
}

/** A streamed chat body for the REST door as an `openai` SDK caller sends it (the door adds no configured defaults). */
export function doorStreamBody(question: string) {
  return { model: 'gpt-4o-mini', messages: openAiMessages(question), stream: true };
}

/** What Callboard sends upstream for `doorStreamBody`: the same, asking for usage (which the history records). */
export function upstreamStreamBody(question: string) {
  return { ...doorStreamBody(question), stream_options: { include_usage: true } };
}

/** The fake upstream's answer to either: the last message echoed. */
export const expectedAnswer = (question: string) => `echo: ${question}`;

const noErrors = (body: string) => !body.includes('"errors"');

/** A new question per request, unique across runs and processes. */
export function createQuestions(): () => string {
  const run = `${process.pid.toString(36)}${Date.now().toString(36)}`;
  let sequence = 0;
  return () => `Question ${run}-${++sequence}: in which year did the first person walk on the Moon, and who was it?`;
}

export const fixedQuestion = 'What is the capital of France, and why did it become the capital?';
export const fixedEmbeddingText = 'Callboard caches every embedding it has been asked for, keyed by model and text.';

export interface ScenarioContext {
  /** e.g. http://127.0.0.1:4000 */
  serverOrigin: string;
  /** e.g. http://127.0.0.1:41234 */
  upstreamOrigin: string;
  /** The ~4,000-token text of the tokenCount scenario. */
  longText: string;
  questions: () => string;
}

export type ScenarioName = 'upstream' | 'miss' | 'hit' | 'embedding' | 'tokens';

export interface Scenario {
  name: ScenarioName;
  title: string;
  /** Whether the fake upstream does work in this scenario (its CPU is then reported). */
  usesUpstream: boolean;
  /** Whether each request adds a row to the call history (written behind the caller's back). */
  writesHistory: boolean;
  target(context: ScenarioContext): LoadTarget;
}

export const scenarios: Record<ScenarioName, Scenario> = {
  upstream: {
    name: 'upstream',
    title: 'upstream direct (floor)',
    usesUpstream: true,
    writesHistory: false,
    target: ({ upstreamOrigin, questions }) => ({
      url: `${upstreamOrigin}/v1/chat/completions`,
      headers: { ...json, authorization: 'Bearer sk-bench-0000000000000000' },
      body: () => JSON.stringify(upstreamChatBody(questions())),
      verify: (body) => body.includes('"chat.completion"'),
    }),
  },
  miss: {
    name: 'miss',
    title: 'sendMessage, cache miss',
    usesUpstream: true,
    writesHistory: true,
    target: ({ serverOrigin, questions }) => ({
      url: `${serverOrigin}/graphql`,
      headers: json,
      body: () => JSON.stringify({ query: sendMessageDocument, variables: { input: chatInput(questions()) } }),
      verify: (body) => noErrors(body) && body.includes('"cacheStatus":"MISS"'),
    }),
  },
  hit: {
    name: 'hit',
    title: 'sendMessage, cache hit',
    usesUpstream: false,
    writesHistory: true,
    target: ({ serverOrigin }) => ({
      url: `${serverOrigin}/graphql`,
      headers: json,
      body: JSON.stringify({ query: sendMessageDocument, variables: { input: chatInput(fixedQuestion) } }),
      verify: (body) => noErrors(body) && body.includes('"cacheStatus":"HIT"'),
    }),
  },
  embedding: {
    name: 'embedding',
    title: 'embedding, cache hit',
    usesUpstream: false,
    writesHistory: true,
    target: ({ serverOrigin }) => ({
      url: `${serverOrigin}/graphql`,
      headers: json,
      body: JSON.stringify({
        query: `query Embed($text: String!) { embedding(text: $text, cache: USE, tags: ["bench"]) { vector dimensions model cacheStatus } }`,
        variables: { text: fixedEmbeddingText },
      }),
      verify: (body) => noErrors(body) && body.includes('"cacheStatus":"HIT"'),
    }),
  },
  tokens: {
    name: 'tokens',
    title: 'tokenCount, ~4,000-token text',
    usesUpstream: false,
    writesHistory: false,
    target: ({ serverOrigin, longText }) => ({
      url: `${serverOrigin}/graphql`,
      headers: json,
      body: tokenCountBody(longText),
      verify: (body) => noErrors(body) && body.includes('"tokens":'),
    }),
  },
};

export function tokenCountBody(text: string): string {
  return JSON.stringify({
    query: `query Count($text: String!) { tokenCount(text: $text, model: "gpt-4o") { tokens encoding } }`,
    variables: { text },
  });
}

/** One GraphQL request outside the load, for set-up and checks. */
export async function graphql<T>(serverOrigin: string, body: string): Promise<T> {
  const response = await fetch(`${serverOrigin}/graphql`, { method: 'POST', headers: json, body, signal: AbortSignal.timeout(30_000) });
  const result = (await response.json()) as { data?: T; errors?: unknown[] };
  if (!response.ok || result.errors) throw new Error(`GraphQL request failed (${response.status}): ${JSON.stringify(result).slice(0, 1000)}`);
  return result.data!;
}

/** Fills the cache for the hit scenarios: one call each, then checks that the next one is a hit. */
export async function primeCache(context: ScenarioContext): Promise<void> {
  for (const name of ['hit', 'embedding'] as const) {
    const target = scenarios[name].target(context);
    const body = target.body as string;
    await graphql(context.serverOrigin, body);
    const second = await fetch(target.url, { method: 'POST', headers: target.headers, body, signal: AbortSignal.timeout(30_000) });
    const text = await second.text();
    if (!target.verify!(text)) throw new Error(`the ${name} scenario does not hit the cache after one call: ${text.slice(0, 500)}`);
  }
}

const englishVocabulary = (
  'the of and to in is was for on that with as by at from this be are have it an or were which has not but ' +
  'their more one all its after also two first new other some time would into only over city year people ' +
  'system model cache history answer question server request response token provider history price cost ' +
  'report market river north south east west world state water power house music school group family ' +
  'service window garden letter number table paper story light night morning evening travel station ' +
  'simple quiet bright heavy short little great early later strong green small large public private'
).split(' ');

/** How buildText writes sentences of a language. */
export interface TextStyle {
  vocabulary: readonly string[];
  /** Between words: a space, or nothing for Chinese. */
  separator: string;
  /** After a sentence's words. */
  end: string;
  /** Between sentences (default a space). */
  between?: string;
  /** Capitalises each sentence's first word. */
  capitalize: boolean;
  /** Put after the middle word of sentences of 12 or more words, when given. */
  comma?: string;
}

export const englishStyle: TextStyle = { vocabulary: englishVocabulary, separator: ' ', end: '.', capitalize: true };

/** A deterministic text of `words` words (English by default) in sentences of 8 to 19 words. */
export function buildText(words: number, style: TextStyle = englishStyle): string {
  const { vocabulary } = style;
  let seed = 42;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const sentences: string[] = [];
  let written = 0;
  while (written < words) {
    const length = Math.min(words - written, 8 + Math.floor(next() * 12));
    const sentence = Array.from({ length }, () => vocabulary[Math.floor(next() * vocabulary.length)]!);
    if (style.capitalize) sentence[0] = sentence[0]!.charAt(0).toUpperCase() + sentence[0]!.slice(1);
    if (style.comma !== undefined && length >= 12) sentence[length >> 1] += style.comma;
    sentences.push(`${sentence.join(style.separator)}${style.end}`);
    written += length;
  }
  return sentences.join(style.between ?? ' ');
}

/**
 * Builds the tokenCount text: starts from an estimate, asks the server for the count, and rescales
 * until it is within 5% of `tokens` (at most three tries).
 */
export async function buildLongText(serverOrigin: string, tokens: number): Promise<{ text: string; tokens: number }> {
  let words = Math.round(tokens / 1.08);
  for (let attempt = 0; attempt < 3; attempt++) {
    const text = buildText(words);
    const counted = (await graphql<{ tokenCount: { tokens: number } }>(serverOrigin, tokenCountBody(text))).tokenCount.tokens;
    if (Math.abs(counted - tokens) <= tokens * 0.05) return { text, tokens: counted };
    words = Math.round((words * tokens) / counted);
  }
  throw new Error(`could not build a text of ${tokens} ± 5% tokens`);
}
