import type { Config, OpenAiConfig } from '../../config/config.ts';

/** A chat message as the OpenAI chat completions API takes it. */
export interface ProviderMessage {
  role: 'system' | 'user' | 'assistant' | 'developer' | 'tool';
  content: string;
  name?: string;
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
}

export interface ProviderUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface ProviderChatResponse {
  message: { role: 'assistant'; content: string | null; refusal: string | null };
  finishReason: string | null;
  model: string;
  usage: ProviderUsage | null;
  /** The provider's whole answer, as stored in the cache and the history. */
  body: unknown;
  requestId: string | null;
}

export interface ProviderEmbeddingRequest {
  model: string;
  input: string[];
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
