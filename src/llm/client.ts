import pLimit from 'p-limit';
import { v7 as uuidv7 } from 'uuid';
import type { Config, OpenAiConfig } from '../config/config.ts';
import { defaultTenant } from '../auth/identity.ts';
import { noLimits, type KeyLimits } from '../auth/limits.ts';
import type { SpendEstimate, SpendGuard } from './pipeline/spend.ts';
import { countMessageTokensAsync, countTextTokensAsync } from './tokens.ts';
import { badUserInput, CallboardError, InputLimitError, isCallboardError, ProviderError } from '../errors.ts';
import { checkCallOptions, checkMessages, checkTexts, type InputLimits } from './input-limits.ts';
import { cacheKey, type CacheEntryValue, type CacheScope, type CacheMode, type CacheStatus, type CallKind, type ResponseCache } from './cache.ts';
import type { AttemptRow, CallRecord, HistoryWriter } from './history.ts';
import type { OverrideStore } from './overrides.ts';
import { costOf } from './prices.ts';
import type {
  Provider,
  ProviderChatRequest,
  ProviderChatResponse,
  ProviderEmbeddingResponse,
  ProviderMessage,
  ProviderUsage,
} from './providers/provider.ts';
import type { ProviderRegistry } from './registry.ts';
import { exponentialBackoff, retry, retryAfterOf, type AttemptRecord, type RetryOutcome } from './retry.ts';
import { renderCall, type TemplatedCallInput, type TemplateStore } from './templates.ts';

export type ChatRole = ProviderMessage['role'];
export type ChatMessage = ProviderMessage;

/** Who makes a call, as the door decided: its tenant and key are recorded, its limits applied. */
export interface Caller {
  tenant: string;
  /** null for the master key and open mode. */
  apiKeyId: string | null;
  limits: KeyLimits;
}

/** Open mode's caller, for code that calls the client without a request (tests, scripts). */
export const defaultCaller: Caller = { tenant: defaultTenant, apiKeyId: null, limits: noLimits };

/** What a caller may attach to any call: its tags and metadata land in the history. */
export interface CallOptions {
  caller?: Caller | null;
  apiType?: string | null;
  cache?: CacheMode | null;
  tags?: readonly string[] | null;
  metadata?: unknown;
  signal?: AbortSignal;
  /** Seconds for the whole call, at most CALL_DEADLINE (its default). */
  deadlineSeconds?: number | null;
  /** Seconds per attempt, at most TIMEOUT (its default). */
  timeoutSeconds?: number | null;
  /** At most MAX_ATTEMPTS (its default). */
  maxAttempts?: number | null;
}

export interface SendMessageInput extends CallOptions {
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
  /** Set by templated calls: recorded so the history can be grouped by template. */
  template?: { name: string | null; hash: string | null };
}

export interface SendMessageResult {
  message: ProviderChatResponse['message'];
  finishReason: string | null;
  model: string;
  usage: ProviderUsage | null;
  cacheStatus: CacheStatus;
  /** The cache's database could not be read: the provider answered, as on a MISS. */
  cacheReadFailed: boolean;
  attempts: number;
  latencyMs: number;
  call: CallRecord;
}

export interface EmbedInput extends CallOptions {
  texts: readonly string[];
  model?: string | null;
}

export interface EmbeddingResult {
  vector: number[];
  model: string;
  cacheStatus: CacheStatus;
}

export interface EmbedResult {
  embeddings: EmbeddingResult[];
  usage: ProviderUsage | null;
  cacheStatus: CacheStatus;
  /** Some text's cache entry could not be read from the database: the provider embedded it. */
  cacheReadFailed: boolean;
  attempts: number;
  latencyMs: number;
  call: CallRecord;
}

export interface LlmClient {
  /** TinyTroupe's send_message: the first choice's message, from the cache or the provider. */
  sendMessage(input: SendMessageInput): Promise<SendMessageResult>;
  /** TinyTroupe's get_embedding, for one text or a batch, cached per text. */
  embed(input: EmbedInput): Promise<EmbedResult>;
  /** TinyTroupe's LLMCall: renders the templates or prompts, then sendMessage. */
  templatedCall(input: TemplatedCallInput & Omit<SendMessageInput, 'messages' | 'template'>): Promise<SendMessageResult>;
}

/** A failed call's error carries the id of its history row, so a caller can look it up. */
export function callIdOf(error: unknown): string | undefined {
  return isCallboardError(error) && typeof error.details.callId === 'string' ? error.details.callId : undefined;
}

export interface LlmClientDependencies {
  registry: ProviderRegistry;
  overrides: Pick<OverrideStore, 'settings'>;
  cache: ResponseCache;
  history: HistoryWriter;
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
  /** Injected for tests on a fake clock. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
  /** Aborts every upstream request, shared ones included: the server's forced stop. */
  signal?: AbortSignal;
}

const retryableStatuses = new Set([408, 409, 429]);
/** Seed-behaviour section 3: 408, 409, 429, 5xx, timeouts and connection errors; never 400, 401, 403, 404, 422 or an abort. */
export function isRetryable(error: unknown): boolean {
  if (!(error instanceof ProviderError)) return false;
  if (error.status !== undefined) return retryableStatuses.has(error.status) || error.status >= 500;
  return error.code === 'PROVIDER_TIMEOUT' || error.code === 'PROVIDER_UNAVAILABLE';
}

/** o1, o3, o4 and gpt-5 families, and whatever REASONING_MODEL names. */
export function isReasoningModel(model: string, settings: OpenAiConfig): boolean {
  return model === settings.reasoningModel || /^(o\d+(-|$)|gpt-5)/.test(model);
}

const roles = new Set<ChatRole>(['system', 'user', 'assistant', 'developer', 'tool']);
const maxEmbeddingBatch = 2048;

export function createLlmClient(dependencies: LlmClientDependencies): LlmClient {
  const { registry, overrides, cache, history } = dependencies;
  const limiters = new Map<number, ReturnType<typeof pLimit>>();
  const limiterFor = (concurrency: number) => {
    let limiter = limiters.get(concurrency);
    if (!limiter) limiters.set(concurrency, (limiter = pLimit(concurrency)));
    return limiter;
  };
  const redact = createRedactor(dependencies.secrets);
  // One listener on the stop signal for all calls: a listener per call would pile up on a signal that lives as long as the process.
  const upstreamInFlight = new Set<AbortController>();
  dependencies.signal?.addEventListener('abort', () => upstreamInFlight.forEach((controller) => controller.abort(dependencies.signal!.reason)), { once: true });

  /**
   * The retry loop around one upstream operation, bounded by MAX_CONCURRENT_MODEL_CALLS per attempt
   * and by the call's deadline: each attempt gets TIMEOUT or the time left, whichever is shorter.
   */
  async function callUpstream<T>(
    settings: OpenAiConfig,
    bounds: CallBounds,
    operation: (signal: AbortSignal | undefined, timeoutMs: number) => Promise<T>,
    signal: AbortSignal | undefined,
  ) {
    const limit = settings.maxConcurrentModelCalls;
    // Aborted by the caller or by the server's forced stop, whichever comes first.
    const controller = new AbortController();
    const onCallerAbort = () => controller.abort(signal!.reason);
    if (signal?.aborted || dependencies.signal?.aborted) controller.abort(signal?.reason);
    signal?.addEventListener('abort', onCallerAbort, { once: true });
    upstreamInFlight.add(controller);
    const attempt = () => {
      // Measured when the request goes out: a wait for a free slot spends the call's time too.
      const left = bounds.deadline - performance.now();
      if (left <= 0) return Promise.reject(new ProviderError('PROVIDER_TIMEOUT', 'The call had no time left for this attempt (it waited for a free upstream slot).'));
      // The SDK takes whole milliseconds only.
      return operation(controller.signal, Math.max(1, Math.floor(Math.min(bounds.timeoutMs, left))));
    };
    let outcome: RetryOutcome<T>;
    try {
      outcome = await retry(
        () => (limit > 0 ? limiterFor(limit)(attempt) : attempt()),
        {
          maxAttempts: bounds.maxAttempts,
          deadline: bounds.deadline,
          maxWaitMs: settings.maxWaitingTime * 1000,
          shouldRetry: isRetryable,
          delay: exponentialBackoff({
            initialMs: settings.waitingTime * 1000,
            factor: settings.exponentialBackoffFactor,
            maxMs: settings.maxWaitingTime * 1000,
            jitter: settings.backoffJitter,
            random: dependencies.random,
          }),
          sleep: dependencies.sleep,
          signal: controller.signal,
        },
      );
    } finally {
      upstreamInFlight.delete(controller);
      signal?.removeEventListener('abort', onCallerAbort);
    }
    const attempts = outcome.attempts.map((attempt) => {
      const row = toAttemptRow(attempt);
      return { ...row, errorMessage: redact(row.errorMessage) };
    });
    if (outcome.ok) return { value: outcome.value, attempts };
    const error = finalError(outcome, bounds, settings);
    throw Object.assign(error instanceof Error ? error : new Error(String(error)), { attempts });
  }

  function finalError(outcome: Extract<RetryOutcome<unknown>, { ok: false }>, bounds: CallBounds, settings: OpenAiConfig): unknown {
    if (outcome.aborted) return dependencies.signal?.aborted ? new CallboardError('ABORTED', 'The call was cut: the server had to stop.') : abortedError();
    const stopped = stoppedEarlyError(outcome, bounds, settings);
    if (stopped) return stopped;
    // A single attempt (MAX_ATTEMPTS=1) retried nothing: its own error says more than "gave up".
    if (!outcome.exhausted || outcome.attempts.length === 1) return outcome.error;
    const last = outcome.error;
    const lastMessage = last instanceof Error ? last.message : String(last);
    return new CallboardError('RETRY_EXHAUSTED', `Gave up after ${outcome.attempts.length} attempts; the last one failed with: ${lastMessage}`, {
      details: {
        attempts: outcome.attempts.length,
        lastErrorCode: isCallboardError(last) ? last.code : null,
        lastStatus: last instanceof ProviderError ? (last.status ?? null) : null,
      },
      cause: last,
    });
  }

  /** The call ended before MAX_ATTEMPTS: a server asked for a wait we will not make, or the deadline came. */
  function stoppedEarlyError(outcome: Extract<RetryOutcome<unknown>, { ok: false }>, bounds: CallBounds, settings: OpenAiConfig): CallboardError | undefined {
    const last = outcome.error;
    const count = outcome.attempts.length;
    const retryAfterMs = retryAfterOf(last);
    if (outcome.refusedWaitMs !== undefined && retryAfterMs !== undefined) {
      const retryAfterSeconds = Math.ceil(retryAfterMs / 1000);
      const limit = retryAfterMs > settings.maxWaitingTime * 1000 ? `MAX_WAITING_TIME (${settings.maxWaitingTime} s)` : `the time left before the call's deadline`;
      return new ProviderError('PROVIDER_RATE_LIMITED', `The provider asked to wait ${retryAfterSeconds} s before a retry, longer than ${limit}; try again later.`, {
        status: last instanceof ProviderError ? last.status : undefined,
        retryAfterMs,
        requestId: last instanceof ProviderError ? last.requestId : undefined,
        details: { retryAfterSeconds, attempts: count },
        cause: last,
      });
    }
    if (!outcome.deadlineExceeded) return undefined;
    const lastMessage = last instanceof Error ? last.message : String(last);
    return new CallboardError('DEADLINE_EXCEEDED', `The call's deadline of ${bounds.deadlineMs / 1000} s came after ${count} attempt${count === 1 ? '' : 's'}; the last one failed with: ${lastMessage}`, {
      details: {
        deadlineSeconds: bounds.deadlineMs / 1000,
        attempts: count,
        lastErrorCode: isCallboardError(last) ? last.code : null,
        lastStatus: last instanceof ProviderError ? (last.status ?? null) : null,
      },
      cause: last,
    });
  }

  /** The per-call limits: the caller may lower CALL_DEADLINE, TIMEOUT and MAX_ATTEMPTS, never raise them. */
  function boundsOf(input: CallOptions, settings: OpenAiConfig, started: number): CallBounds {
    const bounded = (field: string, value: number | null | undefined, key: string, max: number, integer: boolean): number => {
      if (value === null || value === undefined) return max;
      if (!Number.isFinite(value) || value <= 0 || value > max || (integer && !Number.isInteger(value))) {
        throw badUserInput(`${field} must be ${integer ? 'a whole number ' : ''}more than 0 and at most ${key} (${max}), got ${value}.`, { field });
      }
      return value;
    };
    const deadlineMs = bounded('deadlineSeconds', input.deadlineSeconds, 'CALL_DEADLINE', settings.callDeadline, false) * 1000;
    return {
      deadlineMs,
      deadline: started + deadlineMs,
      timeoutMs: bounded('timeoutSeconds', input.timeoutSeconds, 'TIMEOUT', settings.timeout, false) * 1000,
      maxAttempts: bounded('maxAttempts', input.maxAttempts, 'MAX_ATTEMPTS', settings.maxAttempts, true),
    };
  }

  function baseRecord(kind: CallKind, apiType: string, model: string, input: CallOptions & { template?: SendMessageInput['template'] }): CallRecord {
    const caller = input.caller ?? defaultCaller;
    return {
      id: uuidv7(),
      createdAt: new Date(),
      tenant: caller.tenant,
      apiKeyId: caller.apiKeyId,
      servedByCallId: null,
      kind,
      apiType,
      model,
      status: 'SUCCESS',
      cacheStatus: 'BYPASS',
      cacheKey: null,
      errorCode: null,
      errorMessage: null,
      attemptCount: 0,
      latencyMs: 0,
      promptTokens: null,
      completionTokens: null,
      totalTokens: null,
      estimatedPromptTokens: null,
      costUsd: null,
      templateName: input.template?.name ?? null,
      templateHash: input.template?.hash ?? null,
      tags: [...(input.tags ?? [])],
      metadata: redact(input.metadata ?? null),
      requestBody: null,
      responseBody: null,
      attempts: [],
    };
  }

  /** Finishes a record, hands it to the history writer, and returns it. */
  function finish(record: CallRecord, started: number, prompt: unknown, error?: unknown, ownsAttempts = true): CallRecord {
    record.latencyMs = performance.now() - started;
    // A call refused for what it carries keeps none of the refused part, and its prompt is not counted.
    if (error instanceof InputLimitError) {
      prompt = null;
      if (error.field === 'tags') record.tags = [];
      if (error.field === 'metadata') record.metadata = null;
    }
    if (error !== undefined) {
      record.status = 'ERROR';
      record.errorCode = isCallboardError(error) ? error.code : 'INTERNAL_SERVER_ERROR';
      record.errorMessage = redact(error instanceof Error ? error.message : String(error)) as string;
      const attempts = (error as { attempts?: AttemptRow[] }).attempts;
      if (attempts && ownsAttempts) {
        record.attempts = attempts;
        record.attemptCount = attempts.length;
      }
    }
    if (!dependencies.storeBodies) {
      record.requestBody = null;
      record.responseBody = null;
    }
    history.recordCall(record, prompt);
    return record;
  }

  function failWith(error: unknown, record: CallRecord): never {
    if (isCallboardError(error)) {
      // A copy: callers waiting on one single-flight share the error object, each with its own call.
      const copy = Object.assign(Object.create(Object.getPrototypeOf(error) as object) as CallboardError, error, {
        details: { ...error.details, callId: record.id },
      });
      // An upstream message may quote the server's own key: secrets are never answered.
      copy.message = redact(error.message);
      copy.stack = error.stack;
      throw copy;
    }
    // A bug, not a provider's answer: the API masks it as "Unexpected error." and logs the cause.
    throw error;
  }

  /** Runs an upstream call within the caller's limits (reserve, then settle or release). */
  function withinLimits<T extends { value: { model: string; usage: ProviderUsage | null } }>(input: CallOptions, estimate: () => Promise<SpendEstimate>, upstream: () => Promise<T>): Promise<T> {
    if (!dependencies.spend) return upstream();
    const caller = input.caller ?? defaultCaller;
    return dependencies.spend.run(caller, estimate, upstream, (result) => result.value);
  }

  function cacheScope(input: CallOptions, apiType: string, endpoint: string): CacheScope {
    return { apiType, endpoint, tenant: dependencies.sharedAcrossTenants ? null : (input.caller ?? defaultCaller).tenant };
  }

  /** Who an entry belongs to (the tenant and key of the call that filled it), and when that call started. */
  function ownerOf(record: CallRecord): Pick<CacheEntryValue, 'tenant' | 'apiKeyId' | 'requestedAt'> {
    return { tenant: record.tenant, apiKeyId: record.apiKeyId, requestedAt: record.createdAt };
  }

  function cacheModeOf(input: CallOptions, settings: OpenAiConfig): CacheMode {
    return input.cache ?? (settings.cacheApiCalls ? 'USE' : 'BYPASS');
  }

  function expiresAt(): Date | null {
    return dependencies.cacheTtlSeconds === null ? null : new Date(Date.now() + dependencies.cacheTtlSeconds * 1000);
  }

  function chatRequest(input: SendMessageInput, settings: OpenAiConfig, model: string): ProviderChatRequest {
    if (input.messages.length === 0) throw badUserInput('Give at least one message.');
    checkMessages(input.messages, dependencies.inputLimits);
    for (const [index, message] of input.messages.entries()) {
      if (!roles.has(message.role)) throw badUserInput(`Message ${index}: unknown role "${message.role}".`, { index });
      if (typeof message.content !== 'string') throw badUserInput(`Message ${index}: content must be a string.`, { index });
    }
    const numberIn = (name: string, value: number | null | undefined, min: number, max: number) => {
      if (value === null || value === undefined) return;
      if (!Number.isFinite(value) || value < min || value > max) throw badUserInput(`${name} must be between ${min} and ${max}, got ${value}.`, { field: name });
    };
    numberIn('temperature', input.temperature, 0, 2);
    numberIn('topP', input.topP, 0, 1);
    numberIn('frequencyPenalty', input.frequencyPenalty, -2, 2);
    numberIn('presencePenalty', input.presencePenalty, -2, 2);
    if (input.maxTokens !== null && input.maxTokens !== undefined && (!Number.isInteger(input.maxTokens) || input.maxTokens < 1)) {
      throw badUserInput(`maxTokens must be a positive integer, got ${input.maxTokens}.`, { field: 'maxTokens' });
    }
    if (input.stop && input.stop.length > 4) throw badUserInput('stop takes at most 4 sequences.', { field: 'stop' });
    const responseFormat = input.responseFormat;
    if (responseFormat !== null && responseFormat !== undefined) {
      const type = (responseFormat as { type?: unknown }).type;
      if (typeof responseFormat !== 'object' || !['text', 'json_object', 'json_schema'].includes(type as string)) {
        throw badUserInput('responseFormat must be an object with type "text", "json_object" or "json_schema".', { field: 'responseFormat' });
      }
    }

    const messages = input.messages.map((message) => ({ role: message.role, content: message.content, ...(message.name ? { name: message.name } : {}) }));
    const maxTokens = input.maxTokens ?? settings.maxTokens;
    const request: ProviderChatRequest = { model, messages };
    if (isReasoningModel(model, settings)) {
      // Reasoning models reject sampling parameters and take max_completion_tokens instead of max_tokens.
      request.max_completion_tokens = maxTokens;
      const effort = input.reasoningEffort ?? settings.reasoningEffort;
      if (effort) request.reasoning_effort = effort;
    } else {
      request.temperature = input.temperature ?? settings.temperature;
      request.max_tokens = maxTokens;
      const topP = input.topP ?? settings.topP;
      if (topP !== null) request.top_p = topP;
      request.frequency_penalty = input.frequencyPenalty ?? settings.freqPenalty;
      request.presence_penalty = input.presencePenalty ?? settings.presencePenalty;
    }
    if (input.stop && input.stop.length > 0) request.stop = [...input.stop];
    if (responseFormat !== null && responseFormat !== undefined) request.response_format = responseFormat;
    return request;
  }

  async function sendMessage(input: SendMessageInput): Promise<SendMessageResult> {
    const started = performance.now();
    const settings = overrides.settings();
    const apiType = input.apiType ?? settings.apiType;
    const model = input.model ?? settings.model;
    const record = baseRecord('CHAT', apiType, model, input);
    // Callers waiting on another's single-flight share its error, but not its attempts.
    let calledUpstream = false;
    let leaderGaveUp: Promise<{ attempts: AttemptRow[]; response: ProviderChatResponse | null }> | undefined;
    try {
      checkCallOptions(input, dependencies.inputLimits);
      const bounds = boundsOf(input, settings, started);
      const request = chatRequest(input, settings, model);
      // Redacted once: the history row and a cache entry store the same copy.
      const storedRequest = redact(request);
      record.requestBody = storedRequest;
      const provider = registry.providerFor(apiType, settings);
      const mode = cacheModeOf(input, settings);
      record.cacheStatus = mode === 'USE' ? 'MISS' : mode;

      const fromUpstream = async (signal: AbortSignal | undefined) => {
        calledUpstream = true;
        const { value, attempts } = await withinLimits(
          input,
          async () => ({
            model,
            // Counted in slices that yield: a long prompt of a key with limits blocks no one else.
            promptTokens: (await countMessageTokensAsync(request.messages, model)).tokens,
            maxCompletionTokens: request.max_tokens ?? request.max_completion_tokens ?? 0,
          }),
          () => callUpstream(settings, bounds, (attemptSignal, timeoutMs) => provider.chat(request, { timeoutMs, signal: attemptSignal }), signal),
        );
        attempts.at(-1)!.requestId = value.requestId;
        return { response: value, attempts };
      };
      const useResponse = (response: ProviderChatResponse | StoredChat, attempts: AttemptRow[], status: CacheStatus, servedBy: CacheEntryValue | null, cacheReadFailed = false) => {
        record.cacheStatus = status;
        record.servedByCallId = servedBy?.createdByCallId ?? null;
        const entryCost = servedBy ? servedBy.costUsd : null;
        record.attempts = attempts;
        record.attemptCount = attempts.length;
        record.model = response.model || model;
        record.promptTokens = response.usage?.promptTokens ?? null;
        record.completionTokens = response.usage?.completionTokens ?? null;
        record.totalTokens = response.usage?.totalTokens ?? null;
        record.costUsd = entryCost ?? costOf(dependencies.prices, record.model, response.usage);
        // A cached body was redacted when it was stored.
        record.responseBody = status === 'HIT' ? response.body : redact(response.body);
        finish(record, started, request.messages);
        return {
          // An upstream may echo the server's own key back: secrets are never answered.
          message: redact(response.message),
          finishReason: response.finishReason,
          model: record.model,
          usage: response.usage,
          cacheStatus: status,
          cacheReadFailed,
          attempts: attempts.length,
          latencyMs: record.latencyMs,
          call: record,
        };
      };
      const store = (key: string, response: ProviderChatResponse): CacheEntryValue => {
        const { requestId: _requestId, ...stored } = response;
        const entry: CacheEntryValue = {
          key,
          kind: 'CHAT',
          apiType,
          model,
          request: storedRequest,
          response: redact(stored),
          usage: response.usage,
          costUsd: costOf(dependencies.prices, response.model || model, response.usage),
          createdAt: new Date(),
          expiresAt: expiresAt(),
          createdByCallId: record.id,
          ...ownerOf(record),
        };
        cache.remember(entry);
        history.saveCacheEntry(entry);
        return entry;
      };

      if (mode === 'BYPASS') {
        const { response, attempts } = await fromUpstream(input.signal);
        return useResponse(response, attempts, 'BYPASS', null);
      }
      const key = cacheKey('CHAT', cacheScope(input, apiType, provider.endpoint.chat), request);
      record.cacheKey = key;
      if (mode === 'REFRESH') {
        const { response, attempts } = await fromUpstream(input.signal);
        store(key, response);
        dependencies.entryReplaced?.(key);
        return useResponse(response, attempts, 'REFRESH', null);
      }
      const remembered = cache.peek(key);
      if (remembered) {
        history.recordCacheHit(key, new Date());
        return useResponse(remembered.response as StoredChat, [], 'HIT', remembered);
      }
      // The shared upstream call ignores any one caller's abort: each caller stops waiting on its own
      // signal, and the others (and the cache) still get the answer.
      const flight = cache.singleFlight(key, async () => {
        const found = await cache.lookup(key);
        if (found.entry) return { entry: found.entry, fresh: null, cacheReadFailed: false };
        const { response, attempts } = await fromUpstream(undefined);
        return { entry: store(key, response), fresh: { response, attempts }, cacheReadFailed: found.unavailable };
      });
      const { value, leader } = await untilAborted(flight, input.signal, bounds, () => calledUpstream).catch((error: unknown) => {
        // The caller that made the shared request stopped waiting; the request goes on for the others.
        // Its attempts and what it cost still belong on this caller's row, written once it ends.
        if (calledUpstream) {
          leaderGaveUp = flight.then(
            ({ value: shared }) => ({ attempts: shared.fresh?.attempts ?? [], response: shared.fresh?.response ?? null }),
            (failure: unknown) => ({ attempts: (failure as { attempts?: AttemptRow[] }).attempts ?? [], response: null }),
          );
        }
        throw error;
      });
      // The leader answers with the response itself; the stored copy has secrets redacted.
      if (leader && value.fresh) return useResponse(value.fresh.response, value.fresh.attempts, 'MISS', null, value.cacheReadFailed);
      history.recordCacheHit(key, new Date());
      return useResponse(value.entry.response as StoredChat, [], 'HIT', value.entry);
    } catch (error) {
      if (leaderGaveUp) {
        void leaderGaveUp.then(({ attempts, response }) => {
          record.attempts = attempts;
          record.attemptCount = attempts.length;
          if (response) {
            record.promptTokens = response.usage?.promptTokens ?? null;
            record.completionTokens = response.usage?.completionTokens ?? null;
            record.totalTokens = response.usage?.totalTokens ?? null;
            record.costUsd = costOf(dependencies.prices, response.model || model, response.usage);
          }
          finish(record, started, input.messages, error, false);
        });
      } else finish(record, started, input.messages, error, calledUpstream);
      return failWith(error, record);
    }
  }

  async function embed(input: EmbedInput): Promise<EmbedResult> {
    const started = performance.now();
    const settings = overrides.settings();
    const apiType = input.apiType ?? settings.apiType;
    const model = input.model ?? settings.embeddingModel;
    const record = baseRecord('EMBEDDING', apiType, model, input);
    try {
      checkCallOptions(input, dependencies.inputLimits);
      const bounds = boundsOf(input, settings, started);
      if (input.texts.length === 0) throw badUserInput('Give at least one text to embed.');
      if (input.texts.length > maxEmbeddingBatch) throw badUserInput(`Give at most ${maxEmbeddingBatch} texts per call.`);
      if (input.texts.some((text) => text.length === 0)) throw badUserInput('Texts to embed must not be empty.');
      checkTexts(input.texts, dependencies.inputLimits);
      record.requestBody = redact({ model, input: input.texts });
      const provider: Provider = registry.providerFor(apiType, settings);
      const mode = cacheModeOf(input, settings);
      const scope = cacheScope(input, apiType, provider.endpoint.embeddings);
      const keys = input.texts.map((text) => cacheKey('EMBEDDING', scope, { model, input: text }));
      // As for chat: the entry this call read or wrote, none when it bypassed the cache.
      record.cacheKey = keys.length === 1 && mode !== 'BYPASS' ? keys[0]! : null;

      const vectors: (number[] | undefined)[] = new Array(input.texts.length);
      const statuses: CacheStatus[] = new Array(input.texts.length).fill(mode === 'USE' ? 'MISS' : mode);
      let cachedUsage = 0;
      let cachedCost: number | null = null;
      // Counted once the call succeeds: a batch that fails upstream answered nobody from the cache.
      const hitKeys: string[] = [];
      let cacheReadFailed = false;
      if (mode === 'USE') {
        const lookups = await Promise.all(keys.map((key) => cache.lookup(key)));
        cacheReadFailed = lookups.some((lookup) => lookup.unavailable);
        lookups.forEach(({ entry }, index) => {
          if (!entry) return;
          vectors[index] = (entry.response as StoredEmbedding).vector;
          statuses[index] = 'HIT';
          cachedUsage += entry.usage?.promptTokens ?? 0;
          if (entry.costUsd !== null) cachedCost = (cachedCost ?? 0) + entry.costUsd;
          hitKeys.push(entry.key);
          // A call of one text links to the entry that served it, as chat hits do.
          if (keys.length === 1) record.servedByCallId = entry.createdByCallId;
        });
      }
      // Sorted, so that concurrent calls missing the same texts share one upstream request.
      const missing = [...new Set(input.texts.filter((_text, index) => vectors[index] === undefined))].sort();
      let attempts: AttemptRow[] = [];
      let upstream: ProviderEmbeddingResponse | null = null;
      const fetchMissing = async (signal: AbortSignal | undefined) => {
        const result = await withinLimits(
          input,
          async () => {
            let promptTokens = 0;
            for (const text of missing) promptTokens += (await countTextTokensAsync(text, model)).tokens;
            return { model, promptTokens, maxCompletionTokens: 0 };
          },
          () => callUpstream(settings, bounds, (attemptSignal, timeoutMs) => provider.embed({ model, input: missing }, { timeoutMs, signal: attemptSignal }), signal),
        );
        result.attempts.at(-1)!.requestId = result.value.requestId;
        if (mode !== 'BYPASS') storeEmbeddings(result.value);
        return result;
      };
      const storeEmbeddings = (response: ProviderEmbeddingResponse) => {
        const totalLength = missing.reduce((sum, text) => sum + text.length, 0);
        missing.forEach((text, index) => {
          const vector = response.vectors[index]!;
          // The provider reports usage for the whole batch: each text gets its share by length.
          const share = response.usage ? Math.round((response.usage.promptTokens * text.length) / totalLength) : null;
          const usage = share === null ? null : { promptTokens: share, completionTokens: 0, totalTokens: share };
          const entry: CacheEntryValue = {
            key: cacheKey('EMBEDDING', scope, { model, input: text }),
            kind: 'EMBEDDING',
            apiType,
            model,
            request: redact({ model, input: text }),
            response: { vector, model: response.model, dimensions: vector.length } satisfies StoredEmbedding,
            usage,
            costUsd: costOf(dependencies.prices, model, usage),
            createdAt: new Date(),
            expiresAt: expiresAt(),
            createdByCallId: record.id,
            ...ownerOf(record),
          };
          cache.remember(entry);
          history.saveCacheEntry(entry);
        });
      };
      if (missing.length > 0) {
        let sharedFromAnother = false;
        if (mode === 'USE') {
          let leading = false;
          const flight = await untilAborted(
            cache.singleFlight(cacheKey('EMBEDDING', scope, { model, inputs: missing }), () => {
              leading = true;
              return fetchMissing(undefined);
            }),
            input.signal,
            bounds,
            () => leading,
          );
          sharedFromAnother = !flight.leader;
          upstream = flight.value.value;
          attempts = sharedFromAnother ? [] : flight.value.attempts;
        } else {
          const result = await fetchMissing(input.signal);
          upstream = result.value;
          attempts = result.attempts;
        }
        missing.forEach((text, index) => {
          input.texts.forEach((candidate, position) => {
            if (candidate !== text) return;
            vectors[position] = upstream!.vectors[index]!;
            // Answered by another caller's request: for this call, as good as the cache.
            if (sharedFromAnother) statuses[position] = 'HIT';
          });
        });
      }
      for (const key of hitKeys) history.recordCacheHit(key, new Date());
      const allHits = statuses.every((status) => status === 'HIT');
      record.cacheStatus = allHits ? 'HIT' : mode === 'USE' ? 'MISS' : mode;
      record.attempts = attempts;
      record.attemptCount = attempts.length;
      const usage = upstream?.usage ?? (allHits ? { promptTokens: cachedUsage, completionTokens: 0, totalTokens: cachedUsage } : null);
      record.promptTokens = usage?.promptTokens ?? null;
      record.completionTokens = usage ? 0 : null;
      record.totalTokens = usage?.totalTokens ?? null;
      record.costUsd = upstream ? costOf(dependencies.prices, model, usage) : cachedCost;
      record.responseBody = { model: upstream?.model ?? model, dimensions: vectors[0]?.length ?? null, count: vectors.length };
      finish(record, started, input.texts);
      const responseModel = upstream?.model ?? model;
      return {
        embeddings: vectors.map((vector, index) => ({ vector: vector!, model: responseModel, cacheStatus: statuses[index]! })),
        usage,
        cacheStatus: record.cacheStatus,
        cacheReadFailed,
        attempts: attempts.length,
        latencyMs: record.latencyMs,
        call: record,
      };
    } catch (error) {
      finish(record, started, input.texts, error);
      return failWith(error, record);
    }
  }

  return {
    sendMessage,
    embed,
    async templatedCall(input) {
      const started = performance.now();
      let rendered: Awaited<ReturnType<typeof renderCall>>;
      try {
        checkCallOptions(input, dependencies.inputLimits);
        rendered = await renderCall(dependencies.templates, input);
      } catch (error) {
        // A call that fails before it is sent (a missing template, a template and a prompt) still gets its history row.
        const settings = overrides.settings();
        const names = [input.systemTemplateName, input.userTemplateName].filter((name): name is string => typeof name === 'string' && name !== '');
        const template = { name: names.length > 0 ? names.join('+') : null, hash: null };
        const record = baseRecord('CHAT', input.apiType ?? settings.apiType, input.model ?? settings.model, { ...input, template });
        finish(record, started, null, error);
        return failWith(error, record);
      }
      return sendMessage({ ...input, messages: rendered.messages, template: { name: rendered.templateName, hash: rendered.templateHash } });
    },
  };
}

/** A call's limits in milliseconds, its deadline on the performance.now() clock. */
interface CallBounds {
  deadlineMs: number;
  deadline: number;
  timeoutMs: number;
  maxAttempts: number;
}

/** What the cache keeps of a chat response: the provider's answer without its request id. */
type StoredChat = Omit<ProviderChatResponse, 'requestId'>;
interface StoredEmbedding {
  vector: number[];
  model: string;
  dimensions: number;
}

function toAttemptRow(attempt: AttemptRecord): AttemptRow {
  const error = attempt.error;
  return {
    number: attempt.number,
    startedAt: attempt.startedAt,
    latencyMs: attempt.latencyMs,
    httpStatus: error === undefined ? 200 : error instanceof ProviderError ? (error.status ?? null) : null,
    errorCode: error === undefined ? null : isCallboardError(error) ? error.code : 'INTERNAL_SERVER_ERROR',
    errorMessage: error === undefined ? null : error instanceof Error ? error.message : String(error),
    waitMs: attempt.waitMs === undefined ? null : Math.round(attempt.waitMs),
    requestId: error instanceof ProviderError ? (error.requestId ?? null) : null,
  };
}

const abortedError = () => new CallboardError('ABORTED', 'The call was aborted by the caller.');

/**
 * Waits for `promise`, or rejects with ABORTED as soon as the signal aborts, or with
 * DEADLINE_EXCEEDED at this caller's deadline when it waits on another caller's request, which may
 * have a longer one (a leader's own request ends at its deadline, with its attempts).
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, bounds: CallBounds, isLeader: () => boolean): Promise<T> {
  if (signal?.aborted) return Promise.reject(abortedError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortedError());
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      if (isLeader()) return;
      const seconds = bounds.deadlineMs / 1000;
      reject(new CallboardError('DEADLINE_EXCEEDED', `The call's deadline of ${seconds} s came while it waited for the same request made by another call.`, { details: { deadlineSeconds: seconds, attempts: 0 } }));
    }, Math.max(0, bounds.deadline - performance.now()));
    promise.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    });
  });
}

/** Replaces every occurrence of a secret in the strings of a JSON-like value. */
export function createRedactor(secrets: readonly string[]): <T>(value: T) => T {
  const needles = secrets.filter((secret) => secret.length >= 4);
  if (needles.length === 0) return (value) => value;
  const scrub = (value: unknown, depth: number): unknown => {
    if (typeof value === 'string') return needles.reduce((text, needle) => text.split(needle).join('[redacted]'), value);
    if (!value || typeof value !== 'object' || value instanceof Date) return value;
    // A caller's metadata may nest thousands of levels: walking it would overflow the stack and fail the call.
    if (depth >= maxRedactedDepth) return '[nested too deep to store]';
    if (Array.isArray(value)) return value.map((inner) => scrub(inner, depth + 1));
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [scrub(key, depth), scrub(inner, depth + 1)]));
  };
  return (value) => scrub(value, 0) as typeof value;
}

const maxRedactedDepth = 200;
