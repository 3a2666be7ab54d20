import type { Plugin } from 'graphql-yoga';
import { callerOf, holdsRole, type Identity } from '../auth/identity.ts';
import type { ApiKeyRole } from '../auth/keys.ts';
import { badUserInput, CallboardError } from '../errors.ts';
import type { CacheMode } from '../llm/cache.ts';
import type { ChatMessage } from '../llm/client.ts';
import type { ChatStream, SendMessageResult } from '../llm/pipeline/chat.ts';
import { chatRequestFields } from '../llm/pipeline/chat-request.ts';
import type { Services } from '../services.ts';
import { toOpenAiError } from './openai-errors.ts';
import { isOpenAiPath } from './refusal.ts';
import type { RequestLog } from '../observability/request-log.ts';

/** What every answer of the door may carry besides its body. */
type Headers = Record<string, string>;

interface Route {
  method: 'GET' | 'POST';
  /** The route as logs and traces name it. */
  path: string;
  pattern: RegExp;
  /** The least role that may use it: the same as the GraphQL field that does the same thing. */
  role: ApiKeyRole;
  handle(request: DoorRequest, match: RegExpMatchArray): Promise<Response>;
}

interface DoorRequest {
  request: Request;
  identity: Identity;
  requestLog: RequestLog;
  fetchAPI: { Response: typeof Response };
}

const cacheModes: Record<string, CacheMode> = { use: 'USE', refresh: 'REFRESH', bypass: 'BYPASS' };

/**
 * The OpenAI-compatible REST door: POST /v1/chat/completions (streamed or not), POST /v1/embeddings,
 * GET /v1/models and /v1/models/{id}, in OpenAI's wire format, so that code written for the
 * `openai` SDKs points at Callboard by changing its base URL. A thin adapter: it maps the wire format
 * to the LLM client's input and back; keys, limits, cache, retries and history are the pipeline's,
 * as for GraphQL. Identity comes from the door plugin that runs before it.
 */
export function useOpenAiDoor(options: {
  services: Services;
  identityOf: (request: Request) => Identity;
  /** The request's log line and trace (src/observability/request-log.ts). */
  requestLogOf: (request: Request) => RequestLog;
  maxBodyBytes: number;
}): Plugin {
  const { services } = options;
  const routes: Route[] = [
    { method: 'POST', path: '/v1/chat/completions', pattern: /^\/v1\/chat\/completions\/?$/, role: 'MEMBER', handle: chatCompletions },
    { method: 'POST', path: '/v1/embeddings', pattern: /^\/v1\/embeddings\/?$/, role: 'MEMBER', handle: embeddings },
    { method: 'GET', path: '/v1/models', pattern: /^\/v1\/models\/?$/, role: 'VIEWER', handle: async ({ fetchAPI }) => json(fetchAPI, 200, { object: 'list', data: models() }) },
    {
      method: 'GET',
      path: '/v1/models/{id}',
      pattern: /^\/v1\/models\/(.+)$/,
      role: 'VIEWER',
      handle: async ({ fetchAPI }, match) => {
        const id = decodeURIComponent(match[1]!);
        const model = models().find((candidate) => candidate.id === id);
        if (!model) throw new CallboardError('NOT_FOUND', `No model "${id}" is configured; GET /v1/models lists them.`);
        return json(fetchAPI, 200, model);
      },
    },
  ];

  /** The models Callboard is configured for: MODEL, REASONING_MODEL, EMBEDDING_MODEL and those with a price. */
  function models() {
    const settings = services.overrides.settings();
    const ids = new Set([settings.model, settings.reasoningModel, settings.embeddingModel, ...Object.keys(services.loaded.config.prices)].filter((id): id is string => !!id));
    return [...ids].map((id) => ({ id, object: 'model' as const, created: 0, owned_by: settings.apiType }));
  }

  async function chatCompletions({ request, identity, requestLog, fetchAPI }: DoorRequest): Promise<Response> {
    const body = await readJson(request, options.maxBodyBytes);
    const input = {
      ...chatInput(body),
      ...callboardHeaders(request),
      caller: callerOf(identity),
      signal: request.signal,
      requestLog,
      configDefaults: false,
    };
    if (body.stream === true) {
      const streamOptions = body.stream_options as { include_usage?: unknown } | null | undefined;
      const stream = await services.llm.streamMessage({ ...input, includeUsage: streamOptions?.include_usage === true });
      return eventStream(fetchAPI, stream);
    }
    const result = await services.llm.sendMessage(input);
    return json(fetchAPI, 200, result.completion, answerHeaders(result));
  }

  async function embeddings({ request, identity, requestLog, fetchAPI }: DoorRequest): Promise<Response> {
    const body = await readJson(request, options.maxBodyBytes);
    const texts = typeof body.input === 'string' ? [body.input] : body.input;
    if (!Array.isArray(texts) || texts.some((text) => typeof text !== 'string')) {
      throw badUserInput('input must be a string or a list of strings (token arrays are not supported).', { field: 'input' });
    }
    const format = body.encoding_format ?? 'float';
    if (format !== 'float' && format !== 'base64') throw badUserInput('encoding_format must be "float" or "base64".', { field: 'encoding_format' });
    const result = await services.llm.embed({
      texts: texts as string[],
      model: optionalString(body.model, 'model'),
      dimensions: optionalNumber(body.dimensions, 'dimensions'),
      ...callboardHeaders(request),
      caller: callerOf(identity),
      signal: request.signal,
      requestLog,
    });
    const data = result.embeddings.map((embedding, index) => ({
      object: 'embedding',
      index,
      embedding: format === 'base64' ? Buffer.from(new Float32Array(embedding.vector).buffer).toString('base64') : embedding.vector,
    }));
    const usage = { prompt_tokens: result.usage?.promptTokens ?? 0, total_tokens: result.usage?.totalTokens ?? 0 };
    return json(fetchAPI, 200, { object: 'list', data, model: result.embeddings[0]?.model ?? body.model, usage }, answerHeaders(result));
  }

  return {
    async onRequest({ request, url, endResponse, fetchAPI }) {
      if (!isOpenAiPath(url.pathname)) return;
      const routesOfPath = routes.filter((route) => route.pattern.test(url.pathname));
      const route = routesOfPath.find((candidate) => candidate.method === request.method);
      const requestLog = options.requestLogOf(request);
      if (route) {
        requestLog.route = route.path;
        requestLog.operation = `${route.method} ${route.path}`;
      }
      try {
        if (!route) {
          if (routesOfPath.length > 0) throw new CallboardError('NOT_FOUND', `${request.method} is not allowed on ${url.pathname}.`);
          throw new CallboardError('NOT_FOUND', `${url.pathname} is not an endpoint of Callboard's OpenAI-compatible API (chat/completions, embeddings, models).`);
        }
        const identity = options.identityOf(request);
        if (!holdsRole(identity, route.role)) {
          throw new CallboardError('FORBIDDEN', `${request.method} ${url.pathname} needs the ${route.role} role; this key is ${identity.role}.`, {
            details: { requiredRole: route.role, role: identity.role },
          });
        }
        endResponse(await route.handle({ request, identity, requestLog, fetchAPI }, url.pathname.match(route.pattern)!));
      } catch (error) {
        const refused = toOpenAiError(error);
        if (refused.status === 500) services.logger.error({ err: error }, `unexpected error on ${request.method} ${url.pathname}`);
        endResponse(json(fetchAPI, refused.status, refused.body, { ...refused.headers, ...callIdHeader(error) }));
      }
    },
  };
}

function json(fetchAPI: { Response: typeof Response }, status: number, body: unknown, headers: Headers = {}): Response {
  return new fetchAPI.Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

function answerHeaders(result: Pick<SendMessageResult, 'call' | 'cacheStatus'>): Headers {
  return { 'x-callboard-call-id': result.call.id, 'x-callboard-cache-status': result.cacheStatus };
}

function callIdHeader(error: unknown): Headers {
  const callId = error instanceof CallboardError ? error.details.callId : undefined;
  return typeof callId === 'string' ? { 'x-callboard-call-id': callId } : {};
}

/**
 * Server-Sent Events, one chunk per event as the pipeline yields them, `[DONE]` at the end. A
 * failure after the first chunk ends the stream with an error event (OpenAI's error shape, which the
 * SDKs raise as an APIError), never with `[DONE]`. A client that goes away cancels the stream, and
 * with it the upstream request.
 */
function eventStream(fetchAPI: { Response: typeof Response }, stream: ChatStream): Response {
  const encoder = new TextEncoder();
  const iterator = stream[Symbol.asyncIterator]();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await iterator.next();
        if (next.done) {
          controller.enqueue(encoder.encode('data: [DONE]\n\n'));
          controller.close();
        } else controller.enqueue(encoder.encode(`data: ${JSON.stringify(next.value)}\n\n`));
      } catch (error) {
        controller.enqueue(encoder.encode(`data: ${JSON.stringify(toOpenAiError(error).body)}\n\n`));
        controller.close();
      }
    },
    async cancel() {
      await iterator.return?.();
    },
  });
  return new fetchAPI.Response(body, {
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no', ...answerHeaders(stream) },
  });
}

/** The body, read up to `maxBytes` (a chunked body is counted as it comes), as a JSON object. */
async function readJson(request: Request, maxBytes: number): Promise<Record<string, unknown>> {
  const type = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new CallboardError('UNSUPPORTED_MEDIA_TYPE', `The OpenAI-compatible API takes content-type application/json, got ${type ? `"${type}"` : 'none'}.`);
  }
  let text: string;
  if (/^\d+$/.test(request.headers.get('content-length') ?? '')) {
    // A declared length was checked against the bound at the door (useBodyLimit), and Node's parser
    // hands on no more bytes than it declares: read at once.
    text = await request.text();
  } else {
    const chunks: Uint8Array[] = [];
    let bytes = 0;
    for await (const chunk of request.body ?? []) {
      bytes += chunk.byteLength;
      if (bytes > maxBytes) {
        throw new CallboardError('PAYLOAD_TOO_LARGE', `The request body is larger than ${maxBytes} bytes ([Limits] MAX_BODY_BYTES).`, { details: { limit: 'MAX_BODY_BYTES', max: maxBytes } });
      }
      chunks.push(chunk);
    }
    text = Buffer.concat(chunks).toString('utf8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw badUserInput('The request body is not valid JSON.');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw badUserInput('The request body must be a JSON object.');
  return parsed as Record<string, unknown>;
}

/** OpenAI's chat completion body as the client's input; fields Callboard does not know go upstream as they are. */
function chatInput(body: Record<string, unknown>) {
  if (!Array.isArray(body.messages)) throw badUserInput('messages must be a list of messages.', { field: 'messages' });
  const extra = Object.fromEntries(Object.entries(body).filter(([field]) => !chatRequestFields.has(field)));
  const stop = body.stop;
  if (stop !== undefined && stop !== null && typeof stop !== 'string' && !(Array.isArray(stop) && stop.every((item) => typeof item === 'string'))) {
    throw badUserInput('stop must be a string or a list of strings.', { field: 'stop' });
  }
  if (body.tools !== undefined && body.tools !== null && !Array.isArray(body.tools)) throw badUserInput('tools must be a list.', { field: 'tools' });
  return {
    messages: body.messages as ChatMessage[],
    model: optionalString(body.model, 'model'),
    temperature: optionalNumber(body.temperature, 'temperature'),
    maxTokens: optionalNumber(body.max_completion_tokens, 'max_completion_tokens') ?? optionalNumber(body.max_tokens, 'max_tokens'),
    topP: optionalNumber(body.top_p, 'top_p'),
    frequencyPenalty: optionalNumber(body.frequency_penalty, 'frequency_penalty'),
    presencePenalty: optionalNumber(body.presence_penalty, 'presence_penalty'),
    stop: typeof stop === 'string' ? [stop] : (stop as string[] | null | undefined),
    responseFormat: body.response_format,
    reasoningEffort: optionalString(body.reasoning_effort, 'reasoning_effort'),
    tools: body.tools as unknown[] | null | undefined,
    toolChoice: body.tool_choice,
    parallelToolCalls: optionalBoolean(body.parallel_tool_calls, 'parallel_tool_calls'),
    n: optionalNumber(body.n, 'n'),
    seed: optionalNumber(body.seed, 'seed'),
    logprobs: optionalBoolean(body.logprobs, 'logprobs'),
    topLogprobs: optionalNumber(body.top_logprobs, 'top_logprobs'),
    user: optionalString(body.user, 'user'),
    extra: Object.keys(extra).length > 0 ? extra : null,
  };
}

/** Callboard's knobs as headers: `x-callboard-cache: use|refresh|bypass` and `x-callboard-tags: a,b`. */
function callboardHeaders(request: Request): { cache?: CacheMode; tags?: string[] } {
  const cacheHeader = request.headers.get('x-callboard-cache');
  const tagsHeader = request.headers.get('x-callboard-tags');
  const knobs: { cache?: CacheMode; tags?: string[] } = {};
  if (cacheHeader !== null) {
    const mode = cacheModes[cacheHeader.trim().toLowerCase()];
    if (!mode) throw badUserInput(`x-callboard-cache must be use, refresh or bypass, got "${cacheHeader.slice(0, 20)}".`, { field: 'x-callboard-cache' });
    knobs.cache = mode;
  }
  if (tagsHeader !== null) knobs.tags = tagsHeader.split(',').map((tag) => tag.trim()).filter((tag) => tag !== '');
  return knobs;
}

function optionalString(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw badUserInput(`${field} must be a string.`, { field });
  return value;
}

function optionalNumber(value: unknown, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number') throw badUserInput(`${field} must be a number.`, { field });
  return value;
}

function optionalBoolean(value: unknown, field: string): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw badUserInput(`${field} must be true or false.`, { field });
  return value;
}
