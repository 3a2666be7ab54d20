import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import { ProviderError, type ErrorCode } from '../../errors.ts';
import { upstreamFetch } from './upstream-fetch.ts';
import type { Provider, ProviderCallOptions, ProviderChatRequest, ProviderUsage } from './provider.ts';

/** The one place that maps the openai SDK's errors to Callboard's. */
export function toProviderError(error: unknown, apiType: string): unknown {
  if (error instanceof ProviderError) return error;
  if (error instanceof APIUserAbortError) return new ProviderError('ABORTED', 'The call was aborted by the caller.', { cause: error });
  if (error instanceof APIConnectionTimeoutError) {
    return new ProviderError('PROVIDER_TIMEOUT', `${apiType} did not answer in time.`, { cause: error });
  }
  if (error instanceof APIConnectionError) {
    return new ProviderError('PROVIDER_UNAVAILABLE', `${apiType} could not be reached: ${error.message}`, { cause: error });
  }
  if (error instanceof APIError && error.status !== undefined) {
    const status = error.status;
    return new ProviderError(codeForStatus(status), `${apiType} answered ${status}: ${upstreamMessage(error)}`, {
      status,
      retryAfterMs: retryAfterMs(error.headers),
      requestId: error.requestID ?? undefined,
      cause: error,
    });
  }
  return error;
}

function codeForStatus(status: number): ErrorCode {
  if (status === 400 || status === 422) return 'PROVIDER_BAD_REQUEST';
  if (status === 401 || status === 403) return 'PROVIDER_AUTH_FAILED';
  if (status === 404) return 'PROVIDER_NOT_FOUND';
  if (status === 408) return 'PROVIDER_TIMEOUT';
  if (status === 429) return 'PROVIDER_RATE_LIMITED';
  if (status === 409 || status >= 500) return 'PROVIDER_UNAVAILABLE';
  return 'PROVIDER_ERROR';
}

function upstreamMessage(error: APIError): string {
  const body = error.error as { message?: unknown } | undefined;
  return typeof body?.message === 'string' ? body.message : error.message;
}

/** `retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date). */
function retryAfterMs(headers: Headers | undefined): number | undefined {
  const milliseconds = Number.parseFloat(headers?.get('retry-after-ms') ?? '');
  if (Number.isFinite(milliseconds)) return milliseconds;
  const value = headers?.get('retry-after');
  if (!value) return undefined;
  const seconds = Number.parseFloat(value);
  if (Number.isFinite(seconds)) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined;
}

export function usageOf(usage: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number } | undefined | null): ProviderUsage | null {
  if (!usage) return null;
  const promptTokens = usage.prompt_tokens ?? 0;
  const completionTokens = usage.completion_tokens ?? 0;
  return { promptTokens, completionTokens, totalTokens: usage.total_tokens ?? promptTokens + completionTokens };
}

/**
 * A Provider over one SDK client (OpenAI or AzureOpenAI, which share the API). The client is built
 * by the caller with every option explicit and `maxRetries: 0`: Callboard's retry loop counts attempts.
 */
export function createSdkProvider(apiType: string, endpoint: Provider['endpoint'], chatClient: OpenAI, embeddingClient: OpenAI = chatClient): Provider {
  const requestOptions = (options: ProviderCallOptions) => ({ timeout: options.timeoutMs, signal: options.signal, maxRetries: 0 });
  return {
    endpoint,
    async chat(request: ProviderChatRequest, options) {
      try {
        const { data, request_id } = await chatClient.chat.completions
          .create({ ...(request as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming), stream: false }, requestOptions(options))
          .withResponse();
        const choice = data.choices[0];
        if (!choice) throw new ProviderError('PROVIDER_ERROR', `${apiType} answered with no choices.`);
        return { message: choice.message, finishReason: choice.finish_reason ?? null, model: data.model, usage: usageOf(data.usage), body: data, requestId: request_id ?? null };
      } catch (error) {
        throw toProviderError(error, apiType);
      }
    },
    async chatStream(request: ProviderChatRequest, options) {
      // The SDK's timeout ends at the response's headers: the wait for the first chunk is bounded here.
      const controller = new AbortController();
      const onAbort = () => controller.abort(options.signal!.reason);
      if (options.signal?.aborted) onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, options.timeoutMs);
      const stop = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      try {
        const params = { ...(request as unknown as OpenAI.ChatCompletionCreateParamsStreaming), stream: true as const, stream_options: { include_usage: true } };
        const { data, request_id } = await chatClient.chat.completions.create(params, { ...requestOptions(options), signal: controller.signal }).withResponse();
        const iterator = data[Symbol.asyncIterator]();
        const first = await iterator.next();
        clearTimeout(timer);
        if (first.done) throw new ProviderError('STREAM_INTERRUPTED', `${apiType} ended the stream before its first chunk.`);
        return { chunks: rest(first.value, iterator), requestId: request_id ?? null };
      } catch (error) {
        stop();
        if (timedOut && !options.signal?.aborted) throw new ProviderError('PROVIDER_TIMEOUT', `${apiType} sent no chunk in ${options.timeoutMs} ms.`, { cause: error });
        throw toProviderError(error, apiType);
      }

      async function* rest(first: OpenAI.ChatCompletionChunk, iterator: AsyncIterator<OpenAI.ChatCompletionChunk>) {
        try {
          yield first;
          for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
        } catch (error) {
          const mapped = toProviderError(error, apiType);
          // A socket cut or a malformed event: the answer is incomplete, whatever the SDK calls it.
          throw mapped instanceof ProviderError ? mapped : new ProviderError('STREAM_INTERRUPTED', `${apiType} broke off the stream: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
        } finally {
          stop();
          // Stops the upstream request when the caller stops reading (a client that went away).
          controller.abort();
        }
      }
    },
    async embed(request, options) {
      try {
        const { data, request_id } = await embeddingClient.embeddings
          .create(
            { model: request.model, input: request.input, encoding_format: 'float', ...(request.dimensions === undefined ? {} : { dimensions: request.dimensions }) },
            requestOptions(options),
          )
          .withResponse();
        const vectors = [...data.data].sort((a, b) => a.index - b.index).map((item) => item.embedding);
        if (vectors.length !== request.input.length) {
          throw new ProviderError('PROVIDER_ERROR', `${apiType} answered ${vectors.length} embeddings for ${request.input.length} inputs.`);
        }
        return { vectors, model: data.model, usage: usageOf(data.usage), requestId: request_id ?? null };
      } catch (error) {
        throw toProviderError(error, apiType);
      }
    },
  };
}

/** Options that stop the SDK from reading OPENAI_* variables or retrying by itself, and give it the pooled transport. */
export const explicitClientOptions = { maxRetries: 0, organization: null, project: null, webhookSecret: null, fetch: upstreamFetch } as const;
