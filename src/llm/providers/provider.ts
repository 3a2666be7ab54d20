import type OpenAI from 'openai';
import type { Config, OpenAiConfig } from '../../config/config.ts';

/** One part of a message's content: text, or an image by URL (a data: URL included). */
export type ContentPart = { type: 'text'; text: string } | { type: 'image_url'; image_url: { url: string; detail?: string } };

/** A function call the model asked for, as OpenAI's chat API writes it. */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A chat message as the OpenAI chat completions API takes it. */
export interface ProviderMessage {
  role: 'system' | 'user' | 'assistant' | 'developer' | 'tool';
  /** Text, or parts (text and images); null for an assistant message that only calls tools. */
  content: string | ContentPart[] | null;
  name?: string;
  /** An assistant message's calls of tools. */
  tool_calls?: ToolCall[];
  /** A tool message: the call it answers. */
  tool_call_id?: string;
}

/** The exact body sent upstream: absent parameters are absent, never null. */
export interface ProviderChatRequest {
  model: string;
  messages: ProviderMessage[];
  temperature?: number;
  max_tokens?: number;
  max_completion_tokens?: number;
  top_p?: number;
  frequency_penalty?: number;
  presence_penalty?: number;
  stop?: string[];
  response_format?: unknown;
  reasoning_effort?: string;
  tools?: unknown[];
  tool_choice?: unknown;
  parallel_tool_calls?: boolean;
  n?: number;
  seed?: number;
  logprobs?: boolean;
  top_logprobs?: number;
  user?: string;
  /** Fields Callboard does not know, passed through unchanged from the REST door. */
  [extra: string]: unknown;
}

export interface ProviderUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

/** The provider's whole answer in OpenAI's wire format (a streamed one, assembled). */
export type ChatCompletion = OpenAI.ChatCompletion;
export type ChatCompletionChunk = OpenAI.ChatCompletionChunk;

export interface ProviderChatResponse {
  /** The first choice's message. */
  message: ChatCompletion['choices'][number]['message'];
  finishReason: string | null;
  model: string;
  usage: ProviderUsage | null;
  /** The provider's whole answer, as stored in the cache and the history. */
  body: ChatCompletion;
  requestId: string | null;
}

/**
 * A streamed answer whose first chunk has arrived (so a failure before it is retried like any
 * other): `chunks` yields that chunk, then the rest as the provider sends them, and throws a
 * ProviderError when the stream breaks.
 */
export interface ProviderChatStream {
  chunks: AsyncIterable<ChatCompletionChunk>;
  requestId: string | null;
}

export interface ProviderEmbeddingRequest {
  model: string;
  input: string[];
  /** The length of the vectors, for models that can shorten them. */
  dimensions?: number;
}

export interface ProviderEmbeddingResponse {
  vectors: number[][];
  model: string;
  usage: ProviderUsage | null;
  requestId: string | null;
}

export interface ProviderCallOptions {
  /** Milliseconds for this attempt. */
  timeoutMs: number;
  signal?: AbortSignal;
}

/** One upstream: the only code that talks to a model provider. Errors are ProviderErrors. */
export interface Provider {
  /**
   * Where requests go, without secrets: the base URL or endpoint and API version, per operation. Part
   * of the cache key, so an answer from one server is never served for another.
   */
  endpoint: { chat: string; embeddings: string };
  chat(request: ProviderChatRequest, options: ProviderCallOptions): Promise<ProviderChatResponse>;
  /** `options.timeoutMs` bounds the wait for the first chunk; the signal aborts the whole stream. */
  chatStream(request: ProviderChatRequest, options: ProviderCallOptions): Promise<ProviderChatStream>;
  embed(request: ProviderEmbeddingRequest, options: ProviderCallOptions): Promise<ProviderEmbeddingResponse>;
}

/** What a provider module exports; registering it is one line in registry.ts. */
export interface ProviderDefinition {
  apiType: string;
  description: string;
  /** The settings or environment variables this provider still needs; empty when it can serve calls. */
  missing(settings: OpenAiConfig, secrets: Config['secrets']): string[];
  /** Builds the provider with its SDK client; called once per distinct configuration. */
  create(settings: OpenAiConfig, secrets: Config['secrets']): Provider;
}
