import type { Config, OpenAiConfig } from '../../config/config.ts';
import { CallboardError, isCallboardError } from '../../errors.ts';
import { cacheKey, type CacheEntryValue, type CacheMode, type CacheScope, type CacheStatus, type ResponseCache } from '../cache.ts';
import type { AttemptRow, CallRecord } from '../history.ts';
import type { InputLimits } from '../input-limits.ts';
import { checkCallOptions } from '../input-limits.ts';
import type { OverrideStore } from '../overrides.ts';
import { costOf } from '../prices.ts';
import type { ChatCompletion, ChatCompletionChunk, Provider, ProviderChatRequest, ProviderChatResponse, ProviderChatStream, ProviderUsage } from '../providers/provider.ts';
import { usageOf } from '../providers/openai-sdk.ts';
import type { ProviderRegistry } from '../registry.ts';
import { countMessageTokensAsync } from '../tokens.ts';
import { boundsOf, deadlineError, type BoundsInput, type CallBounds } from './bounds.ts';
import type { CacheStep, Fresh, LeaderGaveUp } from './cached.ts';
import { chatRequest, type ChatParameters } from './chat-request.ts';
import { ChunkAssembler, replayChunks } from './chunks.ts';
import { defaultCaller, type Caller, type Recorder, type RecordedOptions } from './record.ts';
import type { SpendEstimate, SpendGuard, SpendHold } from './spend.ts';
import type { Upstream, UpstreamFailure, UpstreamResult } from './upstream.ts';

/** What a caller may attach to any call: its tags and metadata land in the history. */
export interface CallOptions extends BoundsInput, RecordedOptions {
  caller?: Caller | null;
  apiType?: string | null;
  cache?: CacheMode | null;
  signal?: AbortSignal;
}

export interface SendMessageInput extends CallOptions, ChatParameters {}

export interface StreamMessageInput extends SendMessageInput {
  /** Ends the stream with a chunk of usage (OpenAI's stream_options.include_usage). */
  includeUsage?: boolean;
}

/** An answer as the cache keeps it: the provider's, without its request id. */
export type ChatAnswer = Omit<ProviderChatResponse, 'requestId'>;

export interface SendMessageResult {
  /** The first choice's message. */
  message: ProviderChatResponse['message'];
  /** Every choice (n > 1 asks for several). */
  choices: ChatCompletion['choices'];
  /** The whole answer in OpenAI's format (the REST door answers it as is). */
  completion: ChatCompletion;
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

/** A streamed answer under way: its chunks, then (once they ended) the result as sendMessage gives it. */
export interface ChatStream extends AsyncIterable<ChatCompletionChunk> {
  call: CallRecord;
  cacheStatus: CacheStatus;
  /** After the chunks ended without an error. */
  result(): SendMessageResult;
}

/** What every flow is made of: the steps, and the settings they share. */
export interface FlowDependencies {
  registry: ProviderRegistry;
  overrides: Pick<OverrideStore, 'settings'>;
  cache: Pick<ResponseCache, 'lookup' | 'recordHit' | 'store'>;
  upstream: Upstream;
  recorder: Recorder;
  spend?: SpendGuard;
  prices: Config['prices'];
  /** Seconds an entry lives; null: forever. */
  cacheTtlSeconds: number | null;
  /** [Cache] SHARED_ACROSS_TENANTS: one tenant's answers may serve another's identical requests. */
  sharedAcrossTenants: boolean;
  inputLimits: InputLimits;
}

export interface ChatFlowDependencies extends FlowDependencies {
  cache: Pick<ResponseCache, 'peek' | 'lookup' | 'recordHit' | 'store'>;
  cacheStep: CacheStep;
  /** Told when a REFRESH replaced the entry under a key, so that every instance stops serving the old one. */
  entryReplaced?: (key: string) => void;
}

/** A call checked and ready: its row, limits, request, provider and cache key. */
interface Prepared {
  started: number;
  settings: OpenAiConfig;
  record: CallRecord;
  bounds: CallBounds;
  request: ProviderChatRequest;
  provider: Provider;
  mode: CacheMode;
  /** null when the call bypasses the cache. */
  key: string | null;
}

export function cacheModeOf(input: { cache?: CacheMode | null }, settings: OpenAiConfig): CacheMode {
  return input.cache ?? (settings.cacheApiCalls ? 'USE' : 'BYPASS');
}

export function cacheScopeOf(input: { caller?: Caller | null }, apiType: string, endpoint: string, sharedAcrossTenants: boolean): CacheScope {
  return { apiType, endpoint, tenant: sharedAcrossTenants ? null : (input.caller ?? defaultCaller).tenant };
}

/** When an entry made now expires; null: never. */
export function expiresAt(ttlSeconds: number | null): Date | null {
  return ttlSeconds === null ? null : new Date(Date.now() + ttlSeconds * 1000);
}

/** Who an entry belongs to (the tenant and key of the call that filled it), and when that call started. */
export function ownerOf(record: CallRecord): Pick<CacheEntryValue, 'tenant' | 'apiKeyId' | 'requestedAt'> {
  return { tenant: record.tenant, apiKeyId: record.apiKeyId, requestedAt: record.createdAt };
}

/** The chat flows, one pipeline: limits, cache (single flight), retry(provider), record. */
export function createChatFlow(dependencies: ChatFlowDependencies) {
  const { recorder, upstream, cacheStep } = dependencies;
  const { redact } = recorder;

  /** Checks the call and builds its row; a call refused here is recorded and thrown. */
  function prepare(input: SendMessageInput): Prepared {
    const started = performance.now();
    const settings = dependencies.overrides.settings();
    const apiType = input.apiType ?? settings.apiType;
    const model = input.model ?? settings.model;
    const record = recorder.start('CHAT', apiType, model, input);
    try {
      checkCallOptions(input, dependencies.inputLimits);
      const bounds = boundsOf(input, settings, started);
      const request = chatRequest(input, settings, model, dependencies.inputLimits);
      // Redacted once: the history row and a cache entry store the same copy.
      record.requestBody = redact(request);
      const provider = dependencies.registry.providerFor(apiType, settings);
      const mode = cacheModeOf(input, settings);
      record.cacheStatus = mode === 'USE' ? 'MISS' : mode;
      const key = mode === 'BYPASS' ? null : cacheKey('CHAT', cacheScopeOf(input, apiType, provider.endpoint.chat, dependencies.sharedAcrossTenants), request);
      record.cacheKey = key;
      return { started, settings, record, bounds, request, provider, mode, key };
    } catch (error) {
      recorder.finish(record, started, input.messages, error);
      return recorder.fail(error, record);
    }
  }

  const estimateOf = (call: Prepared) => async (): Promise<SpendEstimate> => ({
    model: call.record.model,
    // Counted in slices that yield: a long prompt of a key with limits blocks no one else.
    promptTokens: (await countMessageTokensAsync(call.request.messages, call.record.model)).tokens,
    maxCompletionTokens: ((call.request.max_tokens ?? call.request.max_completion_tokens ?? 0) as number) * ((call.request.n ?? 1) as number),
  });

  function entryOf(call: Prepared, answer: ChatAnswer): CacheEntryValue {
    return {
      key: call.key!,
      kind: 'CHAT',
      apiType: call.record.apiType,
      model: call.record.model,
      request: call.record.requestBody ?? redact(call.request),
      response: redact(answer),
      usage: answer.usage,
      costUsd: costOf(dependencies.prices, answer.model || call.record.model, answer.usage),
      createdAt: new Date(),
      expiresAt: expiresAt(dependencies.cacheTtlSeconds),
      createdByCallId: call.record.id,
      ...ownerOf(call.record),
    };
  }

  /** Fills the row with where the answer came from and what it cost, and finishes it. */
  function complete(call: Prepared, input: SendMessageInput, answer: ChatAnswer, attempts: AttemptRow[], status: CacheStatus, servedBy: CacheEntryValue | null, cacheReadFailed = false): SendMessageResult {
    const { record } = call;
    record.cacheStatus = status;
    record.servedByCallId = servedBy?.createdByCallId ?? null;
    record.attempts = attempts;
    record.attemptCount = attempts.length;
    record.model = answer.model || record.model;
    record.promptTokens = answer.usage?.promptTokens ?? null;
    record.completionTokens = answer.usage?.completionTokens ?? null;
    record.totalTokens = answer.usage?.totalTokens ?? null;
    record.costUsd = servedBy?.costUsd ?? costOf(dependencies.prices, record.model, answer.usage);
    // A cached answer was redacted when it was stored; an upstream may echo the server's own key back.
    const completion = status === 'HIT' ? answer.body : redact(answer.body);
    record.responseBody = completion;
    recorder.finish(record, call.started, input.messages);
    return {
      message: completion.choices[0]?.message ?? redact(answer.message),
      choices: completion.choices,
      completion,
      finishReason: answer.finishReason,
      model: record.model,
      usage: answer.usage,
      cacheStatus: status,
      cacheReadFailed,
      attempts: attempts.length,
      latencyMs: record.latencyMs,
      call: record,
    };
  }

  async function sendMessage(input: SendMessageInput): Promise<SendMessageResult> {
    const call = prepare(input);
    let calledUpstream = false;
    const fromUpstream = async (signal: AbortSignal | undefined): Promise<Fresh<ProviderChatResponse>> => {
      calledUpstream = true;
      const run = () => upstream.call(call.settings, call.bounds, (attemptSignal, timeoutMs) => call.provider.chat(call.request, { timeoutMs, signal: attemptSignal }), signal);
      const { value, attempts } = dependencies.spend ? await dependencies.spend.run(input.caller ?? defaultCaller, estimateOf(call), run, (result) => result.value) : await run();
      attempts.at(-1)!.requestId = value.requestId;
      return { response: value, attempts };
    };
    try {
      if (call.key === null) {
        const fresh = await fromUpstream(input.signal);
        return complete(call, input, fresh.response, fresh.attempts, 'BYPASS', null);
      }
      const served = await cacheStep.serve<ProviderChatResponse>({
        mode: call.mode,
        key: call.key,
        upstream: fromUpstream,
        entryOf: (fresh) => entryOf(call, withoutRequestId(fresh.response)),
        signal: input.signal,
        bounds: call.bounds,
      });
      if (served.status === 'HIT') return complete(call, input, served.entry.response as ChatAnswer, [], 'HIT', served.entry);
      return complete(call, input, served.fresh.response, served.fresh.attempts, served.status, null, served.cacheReadFailed);
    } catch (error) {
      const shared = (error as LeaderGaveUp<ProviderChatResponse>).sharedOutcome;
      if (shared) {
        // Its attempts and what they cost still belong on this caller's row, written once they end.
        void shared.then(({ attempts, response }) => {
          call.record.attempts = attempts;
          call.record.attemptCount = attempts.length;
          if (response) {
            call.record.promptTokens = response.usage?.promptTokens ?? null;
            call.record.completionTokens = response.usage?.completionTokens ?? null;
            call.record.totalTokens = response.usage?.totalTokens ?? null;
            call.record.costUsd = costOf(dependencies.prices, response.model || call.record.model, response.usage);
          }
          recorder.finish(call.record, call.started, input.messages, error, false);
        });
      } else recorder.finish(call.record, call.started, input.messages, error, calledUpstream);
      return recorder.fail(error, call.record);
    }
  }

  /**
   * A streamed call. Resolves once the first chunk is there (from the cache, or from the provider
   * after any retries): a failure before it rejects, as sendMessage would. The chunks follow as the
   * provider sends them; a stream that breaks off throws STREAM_INTERRUPTED (its row is ERROR with the
   * partial answer, and nothing is cached). Streams are not shared between concurrent callers: a
   * second identical stream goes upstream too, and the cache serves the ones after.
   */
  async function streamMessage(input: StreamMessageInput): Promise<ChatStream> {
    const call = prepare(input);
    call.record.streamed = true;
    let entry: CacheEntryValue | undefined;
    let cacheReadFailed = false;
    if (call.key !== null && call.mode === 'USE') {
      entry = dependencies.cache.peek(call.key);
      if (!entry) {
        const found = await dependencies.cache.lookup(call.key);
        entry = found.entry;
        cacheReadFailed = found.unavailable;
      }
    }
    if (entry) {
      dependencies.cache.recordHit(call.key!);
      const answer = entry.response as ChatAnswer;
      return streamOf(call, input, replayChunks(answer.body, { includeUsage: true }), 'HIT', () => complete(call, input, answer, [], 'HIT', entry!), () => {});
    }

    // Aborted when the caller goes away or the deadline comes, retries or not: it stops the upstream request.
    const controller = new AbortController();
    const onAbort = () => controller.abort(input.signal!.reason);
    input.signal?.addEventListener('abort', onAbort, { once: true });
    const deadline = setTimeout(() => controller.abort(deadlineError(call.bounds, 'while the provider was still streaming')), Math.max(0, call.bounds.deadline - performance.now()));
    const stopWatching = () => {
      clearTimeout(deadline);
      input.signal?.removeEventListener('abort', onAbort);
    };
    if (input.signal?.aborted) onAbort();
    let held: SpendHold = { settle: () => {}, release: () => {} };
    let opened: UpstreamResult<ProviderChatStream>;
    try {
      if (dependencies.spend) held = await dependencies.spend.hold(input.caller ?? defaultCaller, estimateOf(call));
      opened = await upstream.call(
        call.settings,
        call.bounds,
        (attemptSignal, timeoutMs) => call.provider.chatStream(call.request, { timeoutMs, signal: AbortSignal.any([attemptSignal, controller.signal]) }),
        controller.signal,
      );
      opened.attempts.at(-1)!.requestId = opened.value.requestId;
    } catch (caught) {
      stopWatching();
      held.release();
      // The deadline's own abort may beat the retry loop's: its error says what happened.
      const reason = controller.signal.reason;
      const error = controller.signal.aborted && isCallboardError(reason) ? Object.assign(reason, { attempts: (caught as UpstreamFailure).attempts }) : caught;
      recorder.finish(call.record, call.started, input.messages, error);
      return recorder.fail(error, call.record);
    }
    const status: CacheStatus = call.mode === 'USE' ? 'MISS' : call.mode;
    const attempts = opened.attempts;
    call.record.attempts = attempts;
    call.record.attemptCount = attempts.length;
    return streamOf(
      call,
      input,
      opened.value.chunks,
      status,
      (completion) => {
        const answer = answerOf(completion);
        held.settle({ model: answer.model, usage: answer.usage });
        if (call.key !== null) {
          dependencies.cache.store(entryOf(call, answer));
          if (call.mode === 'REFRESH') dependencies.entryReplaced?.(call.key);
        }
        return complete(call, input, answer, attempts, status, null, cacheReadFailed);
      },
      stopWatching,
      controller,
    );
  }

  /**
   * The chunks for the caller, assembled as they pass: once they end, `finish` records the whole
   * answer. A cut, an abort or the deadline records the partial answer as an ERROR and throws.
   */
  function streamOf(
    call: Prepared,
    input: StreamMessageInput,
    source: Iterable<ChatCompletionChunk> | AsyncIterable<ChatCompletionChunk>,
    status: CacheStatus,
    finish: (completion: ChatCompletion) => SendMessageResult,
    cleanUp: () => void,
    controller?: AbortController,
  ): ChatStream {
    const assembler = new ChunkAssembler(typeof call.request.n === 'number' ? call.request.n : 1);
    let result: SendMessageResult | undefined;
    call.record.cacheStatus = status;
    async function* chunks(): AsyncGenerator<ChatCompletionChunk> {
      let ended = false;
      try {
        for await (const chunk of source) {
          assembler.add(chunk);
          const forCaller = shownTo(chunk, input.includeUsage ?? false);
          if (!forCaller) continue;
          call.record.timeToFirstTokenMs ??= performance.now() - call.started;
          yield redact(forCaller);
        }
        if (!assembler.finished) throw new CallboardError('STREAM_INTERRUPTED', 'The provider ended the stream before the answer was complete.');
        ended = true;
        result = finish(assembler.result()!);
      } catch (caught) {
        // Our own abort says why: the deadline (its error), or the caller going away (whatever the SDK made of it).
        const reason = controller?.signal.reason;
        const error = !controller?.signal.aborted ? caught : isCallboardError(reason) ? reason : new CallboardError('ABORTED', 'The caller went away while the answer streamed.');
        failPartway(error);
        return recorder.fail(error, call.record);
      } finally {
        cleanUp();
        // The caller stopped reading (it went away): the upstream request stops, and the row says so.
        if (!ended && result === undefined && call.record.status !== 'ERROR') {
          controller?.abort();
          failPartway(new CallboardError('ABORTED', 'The caller stopped reading the stream.'));
        }
      }
    }
    function failPartway(error: unknown) {
      const partial = assembler.result();
      call.record.responseBody = partial === null ? null : redact(partial);
      const usage = partial ? usageOf(partial.usage) : null;
      call.record.promptTokens = usage?.promptTokens ?? null;
      call.record.completionTokens = usage?.completionTokens ?? null;
      call.record.totalTokens = usage?.totalTokens ?? null;
      recorder.finish(call.record, call.started, input.messages, error);
    }
    const generator = chunks();
    let started = false;
    // A stream given up before its first read (a client gone before the first pull) never enters the
    // generator, whose cleanup would not run: it is stopped and recorded here.
    const iterator: AsyncIterator<ChatCompletionChunk> = {
      next: () => {
        started = true;
        return generator.next();
      },
      return: async (value?: unknown) => {
        if (!started) {
          started = true;
          cleanUp();
          controller?.abort();
          failPartway(new CallboardError('ABORTED', 'The caller went away before the answer streamed.'));
        }
        return generator.return(value);
      },
    };
    return {
      call: call.record,
      cacheStatus: status,
      [Symbol.asyncIterator]: () => iterator,
      result() {
        if (!result) throw new Error('The stream has not ended.');
        return result;
      },
    };
  }

  return { sendMessage, streamMessage };
}

/** A streamed answer, assembled, as a non-streamed call would have given it. */
export function answerOf(completion: ChatCompletion): ChatAnswer {
  const first = completion.choices[0];
  return { message: first!.message, finishReason: first?.finish_reason ?? null, model: completion.model, usage: usageOf(completion.usage), body: completion };
}

function withoutRequestId(response: ProviderChatResponse): ChatAnswer {
  const { requestId: _requestId, ...answer } = response;
  return answer;
}

/** Callboard always asks the provider for usage (for the history); the caller sees it only when it asked. */
function shownTo(chunk: ChatCompletionChunk, includeUsage: boolean): ChatCompletionChunk | null {
  if (includeUsage) return chunk;
  if (chunk.choices.length === 0) return null;
  if (!('usage' in chunk)) return chunk;
  const { usage: _usage, ...rest } = chunk;
  return rest as ChatCompletionChunk;
}
