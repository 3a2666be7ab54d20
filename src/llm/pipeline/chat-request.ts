import type { OpenAiConfig } from '../../config/config.ts';
import { badUserInput } from '../../errors.ts';
import { checkMessages, type InputLimits } from '../input-limits.ts';
import type { ProviderChatRequest, ProviderMessage } from '../providers/provider.ts';

export type ChatRole = ProviderMessage['role'];
export type ChatMessage = ProviderMessage;

/** The chat parameters of a call, as both doors give them (GraphQL in camelCase, REST mapped to it). */
export interface ChatParameters {
  messages: readonly ChatMessage[];
  model?: string | null;
  temperature?: number | null;
  maxTokens?: number | null;
  topP?: number | null;
  frequencyPenalty?: number | null;
  presencePenalty?: number | null;
  stop?: readonly string[] | null;
  /** OpenAI's response_format: `{ type: 'json_object' }` or `{ type: 'json_schema', json_schema: {...} }`. */
  responseFormat?: unknown;
  reasoningEffort?: string | null;
  /** OpenAI's tool definitions (`{ type: 'function', function: { name, description, parameters } }`). */
  tools?: readonly unknown[] | null;
  /** "none", "auto", "required", or `{ type: 'function', function: { name } }`. */
  toolChoice?: unknown;
  parallelToolCalls?: boolean | null;
  /** Choices to generate. */
  n?: number | null;
  seed?: number | null;
  logprobs?: boolean | null;
  topLogprobs?: number | null;
  /** The end user, for the provider's abuse monitoring. */
  user?: string | null;
  /** Fields Callboard does not know (the REST door's), sent upstream unchanged and part of the cache key. */
  extra?: Readonly<Record<string, unknown>> | null;
  /**
   * True (GraphQL, TinyTroupe's behaviour): parameters left out take the configuration's values.
   * False (the OpenAI door): only what the caller sent goes upstream, as with OpenAI itself.
   * @default true
   */
  configDefaults?: boolean;
}

/**
 * The body fields chatRequest sets and checks, and stream and stream_options, which the provider sets
 * per call: none of them may come from `extra`.
 */
export const chatRequestFields: ReadonlySet<string> = new Set([
  'model', 'messages', 'temperature', 'max_tokens', 'max_completion_tokens', 'top_p', 'frequency_penalty', 'presence_penalty', 'stop',
  'response_format', 'reasoning_effort', 'tools', 'tool_choice', 'parallel_tool_calls', 'n', 'seed', 'logprobs', 'top_logprobs', 'user',
  'stream', 'stream_options',
]);
const roles = new Set<ChatRole>(['system', 'user', 'assistant', 'developer', 'tool']);
/** OpenAI's own bounds. */
const maxTools = 128;
const maxChoices = 128;
const maxTopLogprobs = 20;
const maxUserLength = 256;

/** o1, o3, o4 and gpt-5 families, and whatever REASONING_MODEL names. */
export function isReasoningModel(model: string, settings: OpenAiConfig): boolean {
  return model === settings.reasoningModel || /^(o\d+(-|$)|gpt-5)/.test(model);
}

/**
 * The exact body sent upstream, checked: roles, contents (text or parts), tool calls and tool
 * answers, every number in its range, every list bounded. Absent parameters are absent, never null.
 */
export function chatRequest(input: ChatParameters, settings: OpenAiConfig, model: string, limits: InputLimits): ProviderChatRequest {
  if (input.messages.length === 0) throw badUserInput('Give at least one message.', { field: 'messages' });
  checkMessages(input.messages, limits);
  const messages = input.messages.map(checkedMessage);
  const numberIn = (name: string, value: number | null | undefined, min: number, max: number, integer = false) => {
    if (value === null || value === undefined) return;
    if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
      throw badUserInput(`${name} must be ${integer ? 'a whole number ' : ''}between ${min} and ${max}, got ${value}.`, { field: name });
    }
  };
  numberIn('temperature', input.temperature, 0, 2);
  numberIn('topP', input.topP, 0, 1);
  numberIn('frequencyPenalty', input.frequencyPenalty, -2, 2);
  numberIn('presencePenalty', input.presencePenalty, -2, 2);
  numberIn('maxTokens', input.maxTokens, 1, Number.MAX_SAFE_INTEGER, true);
  numberIn('n', input.n, 1, maxChoices, true);
  numberIn('seed', input.seed, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, true);
  numberIn('topLogprobs', input.topLogprobs, 0, maxTopLogprobs, true);
  if (input.stop && input.stop.length > 4) throw badUserInput('stop takes at most 4 sequences.', { field: 'stop' });
  if (input.user && input.user.length > maxUserLength) throw badUserInput(`user takes at most ${maxUserLength} characters.`, { field: 'user' });
  const responseFormat = input.responseFormat;
  if (responseFormat !== null && responseFormat !== undefined) {
    const type = (responseFormat as { type?: unknown }).type;
    if (typeof responseFormat !== 'object' || !['text', 'json_object', 'json_schema'].includes(type as string)) {
      throw badUserInput('responseFormat must be an object with type "text", "json_object" or "json_schema".', { field: 'responseFormat' });
    }
  }
  if (input.tools) {
    if (input.tools.length > maxTools) throw badUserInput(`tools takes at most ${maxTools} tools.`, { field: 'tools' });
    input.tools.forEach((tool, index) => {
      const name = (tool as { function?: { name?: unknown } } | null)?.function?.name;
      if (typeof tool !== 'object' || tool === null || typeof name !== 'string') throw badUserInput(`Tool ${index}: give { type: "function", function: { name, parameters } }.`, { field: 'tools', index });
    });
  }

  const useDefaults = input.configDefaults ?? true;
  const pick = <T>(value: T | null | undefined, fallback: T): T | undefined => (value ?? (useDefaults ? fallback : undefined)) ?? undefined;
  // Only fields unknown to Callboard come from `extra`: a known field always says what Callboard checked.
  const extra = Object.entries(input.extra ?? {}).filter(([field]) => !chatRequestFields.has(field));
  const request: ProviderChatRequest = { ...Object.fromEntries(extra), model, messages };
  const maxTokens = pick(input.maxTokens, settings.maxTokens);
  if (isReasoningModel(model, settings)) {
    // Reasoning models reject sampling parameters and take max_completion_tokens instead of max_tokens.
    if (maxTokens !== undefined) request.max_completion_tokens = maxTokens;
    const effort = pick(input.reasoningEffort, settings.reasoningEffort);
    if (effort) request.reasoning_effort = effort;
  } else {
    setIf(request, 'temperature', pick(input.temperature, settings.temperature));
    setIf(request, 'max_tokens', maxTokens);
    setIf(request, 'top_p', pick(input.topP, settings.topP));
    setIf(request, 'frequency_penalty', pick(input.frequencyPenalty, settings.freqPenalty));
    setIf(request, 'presence_penalty', pick(input.presencePenalty, settings.presencePenalty));
  }
  if (input.stop && input.stop.length > 0) request.stop = [...input.stop];
  setIf(request, 'response_format', responseFormat);
  if (input.tools && input.tools.length > 0) request.tools = [...input.tools];
  setIf(request, 'tool_choice', input.toolChoice);
  setIf(request, 'parallel_tool_calls', input.parallelToolCalls);
  setIf(request, 'n', input.n);
  setIf(request, 'seed', input.seed);
  setIf(request, 'logprobs', input.logprobs);
  setIf(request, 'top_logprobs', input.topLogprobs);
  setIf(request, 'user', input.user);
  return request;
}

function setIf(request: ProviderChatRequest, field: string, value: unknown): void {
  if (value !== null && value !== undefined) request[field] = value;
}

function checkedMessage(message: ChatMessage, index: number): ProviderMessage {
  const fail = (why: string) => badUserInput(`Message ${index}: ${why}`, { field: 'messages', index });
  if (typeof message !== 'object' || message === null) throw fail('must be an object with a role and content.');
  if (!roles.has(message.role)) throw fail(`unknown role "${String(message.role)}".`);
  if (message.name !== undefined && message.name !== null && typeof message.name !== 'string') throw fail('name must be a string.');
  const { content } = message;
  const calls = message.tool_calls;
  if (content === null || content === undefined) {
    if (!(message.role === 'assistant' && calls && calls.length > 0)) throw fail('content is required (it may be null only in an assistant message with tool calls).');
  } else if (Array.isArray(content)) {
    if (content.length === 0) throw fail('content parts must not be empty.');
    content.forEach((part, partIndex) => {
      const ok =
        (part?.type === 'text' && typeof part.text === 'string') ||
        (part?.type === 'image_url' && typeof part.image_url?.url === 'string' && (message.role === 'user'));
      if (!ok) throw fail(`content part ${partIndex} must be { type: "text", text } or, in a user message, { type: "image_url", image_url: { url } }.`);
    });
  } else if (typeof content !== 'string') throw fail('content must be a string or a list of parts.');
  if (calls !== undefined && calls !== null) {
    if (message.role !== 'assistant') throw fail('only an assistant message has tool_calls.');
    if (!Array.isArray(calls) || calls.length > maxTools) throw fail(`tool_calls must be a list of at most ${maxTools} calls.`);
    calls.forEach((call, callIndex) => {
      if (typeof call?.id !== 'string' || typeof call.function?.name !== 'string' || typeof call.function.arguments !== 'string') {
        throw fail(`tool call ${callIndex} must be { id, type: "function", function: { name, arguments } }.`);
      }
    });
  }
  if (message.role === 'tool' && typeof message.tool_call_id !== 'string') throw fail('a tool message needs the tool_call_id it answers.');
  const checked: ProviderMessage = { role: message.role, content: content ?? null };
  if (message.name) checked.name = message.name;
  if (calls && calls.length > 0) checked.tool_calls = calls.map((call) => ({ id: call.id, type: 'function', function: { name: call.function.name, arguments: call.function.arguments } }));
  if (message.role === 'tool') checked.tool_call_id = message.tool_call_id;
  return checked;
}
