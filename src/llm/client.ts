import type { Config } from '../config/config.ts';
import type { ResponseCache } from './cache.ts';
import type { CallRecord, HistoryWriter } from './history.ts';
import type { OverrideStore } from './overrides.ts';
import { createCacheStep } from './pipeline/cached.ts';
import { createChatFlow, type ChatStream, type SendMessageInput, type SendMessageResult, type StreamMessageInput } from './pipeline/chat.ts';
import { createEmbedFlow, type EmbedInput, type EmbedResult } from './pipeline/embed.ts';
import { createRecorder } from './pipeline/record.ts';
import type { SpendGuard } from './pipeline/spend.ts';
import { createUpstream } from './pipeline/upstream.ts';
import type { InputLimits } from './input-limits.ts';
import type { ProviderRegistry } from './registry.ts';
import { checkCallOptions } from './input-limits.ts';
import { renderCall, type TemplatedCallInput, type TemplateStore } from './templates.ts';

export type { ChatMessage, ChatRole } from './pipeline/chat-request.ts';
export { isReasoningModel } from './pipeline/chat-request.ts';
export type { CallOptions, ChatStream, SendMessageInput, SendMessageResult, StreamMessageInput } from './pipeline/chat.ts';
export type { EmbedInput, EmbedResult, EmbeddingResult } from './pipeline/embed.ts';
export { callIdOf, createRedactor, defaultCaller, type Caller } from './pipeline/record.ts';
export { isRetryable } from './pipeline/upstream.ts';

/**
 * Every call passes through one pipeline: limits (pipeline/spend.ts), cache with single flight
 * (pipeline/cached.ts), retry of the provider (pipeline/upstream.ts), record (pipeline/record.ts).
 * The flows (pipeline/chat.ts, pipeline/embed.ts) put the steps together; the doors (GraphQL, the
 * OpenAI-compatible REST door) are thin adapters over this client.
 */
export interface LlmClient {
  /** TinyTroupe's send_message: the first choice's message (and every choice), from the cache or the provider. */
  sendMessage(input: SendMessageInput): Promise<SendMessageResult>;
  /** sendMessage as a stream of OpenAI chunks: resolves at the first chunk (see ChatStream). */
  streamMessage(input: StreamMessageInput): Promise<ChatStream>;
  /** TinyTroupe's get_embedding, for one text or a batch, cached per text. */
  embed(input: EmbedInput): Promise<EmbedResult>;
  /** TinyTroupe's LLMCall: renders the templates or prompts, then sendMessage. */
  templatedCall(input: TemplatedCallInput & Omit<SendMessageInput, 'messages' | 'template'>): Promise<SendMessageResult>;
}

export interface LlmClientDependencies {
  registry: ProviderRegistry;
  overrides: Pick<OverrideStore, 'settings'>;
  cache: ResponseCache;
  history: Pick<HistoryWriter, 'recordCall'>;
  templates: TemplateStore;
  prices: Config['prices'];
  /** Seconds an entry lives; null: forever. */
  cacheTtlSeconds: number | null;
  storeBodies: boolean;
  /** Told when a REFRESH replaced the entry under a key, so that every instance stops serving the old one. */
  entryReplaced?: (key: string) => void;
  /** Holds each call that goes upstream to its key's limits and budgets; none: no limits. */
  spend?: SpendGuard;
  /** [Cache] SHARED_ACROSS_TENANTS: one tenant's answers may serve another's identical requests. */
  sharedAcrossTenants?: boolean;
  /** Values that must never reach a stored row (API keys). */
  secrets: readonly string[];
  /** What one call may carry: messages, characters, tags, metadata. */
  inputLimits: InputLimits;
  /** Told of every call as it finishes, after its history row is queued (the metrics). */
  onCallFinished?: (record: CallRecord) => void;
  /** Injected for tests on a fake clock. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
  /** Aborts every upstream request, shared ones included: the server's forced stop. */
  signal?: AbortSignal;
}

export function createLlmClient(dependencies: LlmClientDependencies): LlmClient {
  const recorder = createRecorder({ history: dependencies.history, secrets: dependencies.secrets, storeBodies: dependencies.storeBodies, onFinished: dependencies.onCallFinished });
  const upstream = createUpstream({ redact: recorder.redact, stop: dependencies.signal, sleep: dependencies.sleep, random: dependencies.random });
  const steps = {
    registry: dependencies.registry,
    overrides: dependencies.overrides,
    cache: dependencies.cache,
    upstream,
    recorder,
    spend: dependencies.spend,
    prices: dependencies.prices,
    cacheTtlSeconds: dependencies.cacheTtlSeconds,
    sharedAcrossTenants: dependencies.sharedAcrossTenants ?? false,
    inputLimits: dependencies.inputLimits,
  };
  const chat = createChatFlow({ ...steps, cacheStep: createCacheStep({ cache: dependencies.cache, entryReplaced: dependencies.entryReplaced }), entryReplaced: dependencies.entryReplaced });
  const embed = createEmbedFlow(steps);
  const { sendMessage } = chat;

  return {
    sendMessage,
    streamMessage: chat.streamMessage,
    embed,
    async templatedCall(input) {
      const started = performance.now();
      let rendered: Awaited<ReturnType<typeof renderCall>>;
      try {
        checkCallOptions(input, dependencies.inputLimits);
        rendered = await renderCall(dependencies.templates, input);
      } catch (error) {
        // A call that fails before it is sent (a missing template, a template and a prompt) still gets its history row.
        const settings = dependencies.overrides.settings();
        const names = [input.systemTemplateName, input.userTemplateName].filter((name): name is string => typeof name === 'string' && name !== '');
        const template = { name: names.length > 0 ? names.join('+') : null, hash: null };
        const record = recorder.start('CHAT', input.apiType ?? settings.apiType, input.model ?? settings.model, { ...input, template });
        recorder.finish(record, started, null, error);
        return recorder.fail(error, record);
      }
      return sendMessage({ ...input, messages: rendered.messages, template: { name: rendered.templateName, hash: rendered.templateHash } });
    },
  };
}
