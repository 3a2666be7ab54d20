import { setImmediate as nextTurn } from 'node:timers/promises';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import { badUserInput } from '../errors.ts';
import { BytePairEncoder, EncodeJob } from './bpe.ts';

export type Encoding = 'o200k_base' | 'cl100k_base';

export interface TokenMessage {
  role: string;
  content: string | ReadonlyArray<{ type: string; text?: string }> | null;
  name?: string | null;
}

export interface TokenCountResult {
  tokens: number;
  model: string;
  encoding: Encoding;
  /** True when the model is unknown and o200k_base was assumed. */
  fallback: boolean;
}

const ranksByEncoding = { o200k_base: o200kBase, cl100k_base: cl100kBase } as const;

// Building an encoder reads the whole rank table (a tenth of a second or more), so each is built once, on first use.
// Special-token text such as "<|endoftext|>" counts as the plain characters the API sees (js-tiktoken's
// encode(text, [], [])): the encoder never reads it as one control token, and never throws on it.
const encoders = new Map<Encoding, BytePairEncoder>();

function encoderFor(encoding: Encoding): BytePairEncoder {
  let encoder = encoders.get(encoding);
  if (encoder === undefined) {
    encoder = new BytePairEncoder(ranksByEncoding[encoding]);
    encoders.set(encoding, encoder);
  }
  return encoder;
}

/** Empties the caches of every encoder built so far, so that the next count starts cold (for benchmarks). */
export function clearTokenCaches(): void {
  for (const encoder of encoders.values()) encoder.clearCaches();
}

// Order matters: the gpt-4o / gpt-4.1 / gpt-4.5 families must be matched before plain gpt-4.
const o200kModels = /^(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1(?:-|$)|o3(?:-|$)|o4(?:-|$))/;
const cl100kModels = /^(?:gpt-4(?:-|$)|gpt-3\.5-turbo|text-embedding-3-|text-embedding-ada-002)/;

/** Lower-cases the name, drops a fine-tune "ft:" prefix and spells Azure's "gpt-35" the way OpenAI does. */
function normalizeModel(model: string): string {
  return model
    .trim()
    .toLowerCase()
    .replace(/^ft:/, '')
    .replace(/^gpt-35(?=-|$)/, 'gpt-3.5');
}

export function encodingForModel(model: string): { encoding: Encoding; fallback: boolean } {
  const normalized = normalizeModel(model);
  if (o200kModels.test(normalized)) return { encoding: 'o200k_base', fallback: false };
  if (cl100kModels.test(normalized)) return { encoding: 'cl100k_base', fallback: false };
  // Every model OpenAI has released since gpt-4o uses o200k_base, so it is the likeliest guess for a new name.
  return { encoding: 'o200k_base', fallback: true };
}

// About 32,000 units of work (bytes, merges) take one to four milliseconds: the asynchronous counts give the event
// loop a turn after each such slice, so a multi-megabyte text, or one long "word", never blocks other requests long.
const sliceWork = 32_768;

/** Counts several texts in slices of bounded work, yielding to the event loop between slices. */
class SlicedCounter {
  private spent = 0;

  constructor(private readonly encoder: BytePairEncoder) {}

  async count(text: string): Promise<number> {
    const job = new EncodeJob(text, null);
    for (;;) {
      const before = job.work;
      if (this.spent < sliceWork) this.encoder.advance(job, sliceWork - this.spent);
      this.spent += job.work - before;
      if (job.done) return job.tokens;
      await nextTurn();
      this.spent = 0;
    }
  }
}

export function countTextTokens(text: string, model: string): TokenCountResult {
  const { encoding, fallback } = encodingForModel(model);
  return { tokens: encoderFor(encoding).count(text), model, encoding, fallback };
}

/** countTextTokens, giving the event loop a turn every few milliseconds of work on a long text. */
export async function countTextTokensAsync(text: string, model: string): Promise<TokenCountResult> {
  const { encoding, fallback } = encodingForModel(model);
  const tokens = await new SlicedCounter(encoderFor(encoding)).count(text);
  return { tokens, model, encoding, fallback };
}

/**
 * The texts of a chat request that are encoded, and the tokens added around them, by the OpenAI cookbook's
 * "How to count tokens with tiktoken" accounting.
 */
function messageAccounting(messages: readonly TokenMessage[], model: string): { texts: string[]; fixedTokens: number } {
  // gpt-3.5-turbo-0301 wrapped each message as <|start|>{role/name}\n{content}<|end|>\n and dropped the role when a name was given.
  const isTurbo0301 = normalizeModel(model) === 'gpt-3.5-turbo-0301';
  const tokensPerMessage = isTurbo0301 ? 4 : 3;
  const tokensPerName = isTurbo0301 ? -1 : 1;

  const texts: string[] = [];
  let fixedTokens = 0;
  for (const message of messages) {
    fixedTokens += tokensPerMessage;
    texts.push(message.role);
    const { content } = message;
    if (typeof content === 'string') {
      texts.push(content);
    } else if (content !== null) {
      for (const part of content) {
        // Image, audio and file parts are billed by size and detail, which tiktoken cannot know: they are left out,
        // so the count is a lower bound for such messages.
        if (part.type === 'text' && typeof part.text === 'string') texts.push(part.text);
      }
    }
    if (message.name != null) {
      texts.push(message.name);
      fixedTokens += tokensPerName;
    }
  }
  fixedTokens += 3; // every reply is primed with <|start|>assistant<|message|>
  return { texts, fixedTokens };
}

/** Prompt tokens of a chat request, by the OpenAI cookbook's "How to count tokens with tiktoken" accounting. */
export function countMessageTokens(messages: readonly TokenMessage[], model: string): TokenCountResult {
  const { encoding, fallback } = encodingForModel(model);
  const encoder = encoderFor(encoding);
  const { texts, fixedTokens } = messageAccounting(messages, model);
  let tokens = fixedTokens;
  for (const text of texts) tokens += encoder.count(text);
  return { tokens, model, encoding, fallback };
}

/** countMessageTokens, giving the event loop a turn every few milliseconds of work on a long conversation. */
export async function countMessageTokensAsync(messages: readonly TokenMessage[], model: string): Promise<TokenCountResult> {
  const { encoding, fallback } = encodingForModel(model);
  const counter = new SlicedCounter(encoderFor(encoding));
  const { texts, fixedTokens } = messageAccounting(messages, model);
  let tokens = fixedTokens;
  for (const text of texts) tokens += await counter.count(text);
  return { tokens, model, encoding, fallback };
}

function checkCountInput(input: { model: string; text?: string | null; messages?: readonly TokenMessage[] | null }): void {
  const { model, text, messages } = input;
  if (model.trim() === '') throw badUserInput('model must not be blank', { field: 'model' });
  if ((text != null) === (messages != null)) {
    throw badUserInput('Give exactly one of text or messages to count', { hasText: text != null, hasMessages: messages != null });
  }
}

export function countTokens(input: {
  model: string;
  text?: string | null;
  messages?: readonly TokenMessage[] | null;
}): TokenCountResult {
  checkCountInput(input);
  return input.text != null ? countTextTokens(input.text, input.model) : countMessageTokens(input.messages!, input.model);
}

/** countTokens, giving the event loop a turn every few milliseconds of work on a long input. */
export async function countTokensAsync(input: {
  model: string;
  text?: string | null;
  messages?: readonly TokenMessage[] | null;
}): Promise<TokenCountResult> {
  checkCountInput(input);
  return input.text != null
    ? countTextTokensAsync(input.text, input.model)
    : countMessageTokensAsync(input.messages!, input.model);
}
