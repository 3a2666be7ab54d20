import { Tiktoken } from 'js-tiktoken/lite';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import { badUserInput } from '../errors.ts';

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

// Building an encoder parses the whole rank table (about half a second), so each is built once, on first use.
const encoders = new Map<Encoding, Tiktoken>();

function encoderFor(encoding: Encoding): Tiktoken {
  let encoder = encoders.get(encoding);
  if (encoder === undefined) {
    encoder = new Tiktoken(ranksByEncoding[encoding]);
    encoders.set(encoding, encoder);
  }
  return encoder;
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

// An empty disallowed list makes user text such as "<|endoftext|>" count as the plain characters the API sees,
// instead of throwing (js-tiktoken's default) or being read as one control token.
function encodedLength(encoder: Tiktoken, text: string): number {
  return encoder.encode(text, [], []).length;
}

export function countTextTokens(text: string, model: string): TokenCountResult {
  const { encoding, fallback } = encodingForModel(model);
  return { tokens: encodedLength(encoderFor(encoding), text), model, encoding, fallback };
}

function contentTokens(encoder: Tiktoken, content: TokenMessage['content']): number {
  if (content === null) return 0;
  if (typeof content === 'string') return encodedLength(encoder, content);
  let tokens = 0;
  for (const part of content) {
    // Image, audio and file parts are billed by size and detail, which tiktoken cannot know: they are left out,
    // so the count is a lower bound for such messages.
    if (part.type === 'text' && typeof part.text === 'string') tokens += encodedLength(encoder, part.text);
  }
  return tokens;
}

/** Prompt tokens of a chat request, by the OpenAI cookbook's "How to count tokens with tiktoken" accounting. */
export function countMessageTokens(messages: readonly TokenMessage[], model: string): TokenCountResult {
  const { encoding, fallback } = encodingForModel(model);
  const encoder = encoderFor(encoding);
  // gpt-3.5-turbo-0301 wrapped each message as <|start|>{role/name}\n{content}<|end|>\n and dropped the role when a name was given.
  const isTurbo0301 = normalizeModel(model) === 'gpt-3.5-turbo-0301';
  const tokensPerMessage = isTurbo0301 ? 4 : 3;
  const tokensPerName = isTurbo0301 ? -1 : 1;

  let tokens = 0;
  for (const message of messages) {
    tokens += tokensPerMessage;
    tokens += encodedLength(encoder, message.role);
    tokens += contentTokens(encoder, message.content);
    if (message.name != null) tokens += encodedLength(encoder, message.name) + tokensPerName;
  }
  tokens += 3; // every reply is primed with <|start|>assistant<|message|>
  return { tokens, model, encoding, fallback };
}

export function countTokens(input: {
  model: string;
  text?: string | null;
  messages?: readonly TokenMessage[] | null;
}): TokenCountResult {
  const { model, text, messages } = input;
  if (model.trim() === '') throw badUserInput('model must not be blank', { field: 'model' });
  if (text != null && messages == null) return countTextTokens(text, model);
  if (messages != null && text == null) return countMessageTokens(messages, model);
  throw badUserInput('Give exactly one of text or messages to count', { hasText: text != null, hasMessages: messages != null });
}
