import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type FakeRoute = 'chat' | 'embeddings';

export interface RecordedRequest {
  route: FakeRoute | 'unknown';
  flavor: 'openai' | 'azure';
  method: string;
  path: string;
  query: Record<string, string>;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Parsed JSON body; the raw text when it is not JSON; undefined when empty. */
  body: any;
  deployment?: string;
  apiVersion?: string;
  /** 1-based per route, counting every request recorded for that route (rejected ones too). */
  callNumber: number;
}

export type FakeResponse =
  | { status?: number; json: unknown; headers?: Record<string, string>; delayMs?: number }
  | {
      error: { status: number; message?: string; type?: string; code?: string };
      headers?: Record<string, string>;
      delayMs?: number;
    }
  | { sse: unknown[]; headers?: Record<string, string> }
  | { hang: true }
  /** Drops the connection with a TCP reset, answering nothing (the client sees ECONNRESET). */
  | { reset: true };

/**
 * A response, a list (item n answers the n-th request the script sees, counted from the
 * script() call; the last one repeats), or a function of the request.
 */
export type FakeHandler =
  | FakeResponse
  | FakeResponse[]
  | ((request: RecordedRequest) => FakeResponse | Promise<FakeResponse>);

export interface FakeOpenAI {
  url: string;
  /** Give to `new OpenAI({ baseURL })`. */
  openaiBaseURL: string;
  /** Give to `new AzureOpenAI({ endpoint })`. */
  azureEndpoint: string;
  /** Every request received, in order, including rejected ones. */
  requests: RecordedRequest[];
  requestsTo(route: FakeRoute): RecordedRequest[];
  /** Replaces that route's behaviour until reset(); a list starts again at its first item. */
  script(route: FakeRoute, handler: FakeHandler): void;
  /** Clears requests, call numbers and scripts (back to the default behaviour). */
  reset(): void;
  /** Closes the server, destroying open and hanging sockets. */
  close(): Promise<void>;
}

export interface StartFakeOpenAIOptions {
  defaultEmbeddingDimensions?: number;
}

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
}

export interface ChatCompletionOptions {
  content: string | null;
  model: string;
  /** Defaults to 0 prompt tokens and one completion token per word of content. */
  usage?: ChatUsage;
  finishReason?: 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call';
  id?: string;
}

export interface ChatCompletionChunksOptions extends ChatCompletionOptions {
  /** Adds the final usage chunk, as `stream_options: { include_usage: true }` does. */
  includeUsage?: boolean;
}

export interface EmbeddingsResponseOptions {
  /** Strings, or token arrays (hashed as their JSON text). */
  inputs: unknown[];
  model: string;
  dimensions: number;
  /** 'base64' is what the SDK asks for unless the caller chose an encoding_format. */
  encodingFormat?: 'float' | 'base64';
}

const routePatterns: { flavor: 'openai' | 'azure'; route: FakeRoute; pattern: RegExp }[] = [
  { flavor: 'openai', route: 'chat', pattern: /^\/v1\/chat\/completions\/?$/ },
  { flavor: 'openai', route: 'embeddings', pattern: /^\/v1\/embeddings\/?$/ },
  { flavor: 'azure', route: 'chat', pattern: /^\/openai\/deployments\/([^/]+)\/chat\/completions\/?$/ },
  { flavor: 'azure', route: 'embeddings', pattern: /^\/openai\/deployments\/([^/]+)\/embeddings\/?$/ },
];

export function countWords(text: string): number {
  return text.split(/\s+/).filter((word) => word.length > 0).length;
}

function chatUsage(content: string | null, usage: ChatUsage | undefined) {
  const promptTokens = usage?.prompt_tokens ?? 0;
  const completionTokens = usage?.completion_tokens ?? countWords(content ?? '');
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: usage?.total_tokens ?? promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

function completionId(): string {
  return `chatcmpl-${randomUUID().replace(/-/g, '')}`;
}

function nowInSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export function chatCompletion(options: ChatCompletionOptions) {
  return {
    id: options.id ?? completionId(),
    object: 'chat.completion' as const,
    created: nowInSeconds(),
    model: options.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant' as const, content: options.content, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: options.finishReason ?? 'stop',
      },
    ],
    usage: chatUsage(options.content, options.usage),
    service_tier: 'default',
    system_fingerprint: 'fp_fake_openai',
  };
}

/** The `chat.completion.chunk` events of a stream: role, one chunk per word, finish, then usage if asked. */
export function chatCompletionChunks(options: ChatCompletionChunksOptions) {
  const id = options.id ?? completionId();
  const created = nowInSeconds();
  const usageField = options.includeUsage ? { usage: null } : {};
  const chunk = (delta: Record<string, unknown>, finishReason: string | null) => ({
    id,
    object: 'chat.completion.chunk' as const,
    created,
    model: options.model,
    service_tier: 'default',
    system_fingerprint: 'fp_fake_openai',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    ...usageField,
  });
  const pieces = options.content === null ? [] : (options.content.match(/\s*\S+\s*|\s+/g) ?? []);
  const chunks: unknown[] = [
    chunk({ role: 'assistant', content: options.content === null ? null : '', refusal: null }, null),
    ...pieces.map((piece) => chunk({ content: piece }, null)),
    chunk({}, options.finishReason ?? 'stop'),
  ];
  if (options.includeUsage) {
    chunks.push({
      id,
      object: 'chat.completion.chunk',
      created,
      model: options.model,
      service_tier: 'default',
      system_fingerprint: 'fp_fake_openai',
      choices: [],
      usage: chatUsage(options.content, options.usage),
    });
  }
  return chunks;
}

/** Deterministic vector for a text, derived from SHA-256; values are multiples of 1/128 in [-1, 1), exact in float32. */
export function embeddingVector(text: string, dimensions: number): number[] {
  const vector: number[] = [];
  for (let block = 0; vector.length < dimensions; block++) {
    const digest = createHash('sha256').update(`${block}:${text}`).digest();
    for (const byte of digest) {
      if (vector.length === dimensions) break;
      vector.push(byte / 128 - 1);
    }
  }
  return vector;
}

function inputText(input: unknown): string {
  return typeof input === 'string' ? input : JSON.stringify(input);
}

function base64Vector(vector: number[]): string {
  const floats = Float32Array.from(vector);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}

export function embeddingsResponse(options: EmbeddingsResponseOptions) {
  const promptTokens = options.inputs.reduce<number>(
    (sum, input) =>
      sum + (Array.isArray(input) ? input.length : Math.max(1, countWords(inputText(input)))),
    0,
  );
  return {
    object: 'list' as const,
    data: options.inputs.map((input, index) => {
      const vector = embeddingVector(inputText(input), options.dimensions);
      return {
        object: 'embedding' as const,
        index,
        embedding: options.encodingFormat === 'base64' ? base64Vector(vector) : vector,
      };
    }),
    model: options.model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

function defaultErrorType(status: number): string {
  if (status === 401) return 'invalid_request_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

function errorBody(error: { status: number; message?: string; type?: string; code?: string }) {
  return {
    error: {
      message: error.message ?? `Fake error with status ${error.status}`,
      type: error.type ?? defaultErrorType(error.status),
      param: null,
      code: error.code ?? null,
    },
  };
}

function messageText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (part && typeof part === 'object' && typeof part.text === 'string' ? part.text : ''))
      .filter((text) => text.length > 0)
      .join(' ');
  }
  return '';
}

function defaultChat(request: RecordedRequest): FakeResponse {
  const body = request.body;
  const messages: unknown[] | undefined = Array.isArray(body?.messages) ? body.messages : undefined;
  if (!messages || messages.length === 0) {
    return { error: { status: 400, message: "'messages' must be a non-empty array", code: 'invalid_value' } };
  }
  const model = request.flavor === 'azure' ? request.deployment! : body.model;
  if (typeof model !== 'string' || model.length === 0) {
    return { error: { status: 400, message: 'you must provide a model parameter', code: 'missing_model' } };
  }
  const texts = messages.map((message) => messageText((message as { content?: unknown } | null)?.content));
  const content = `echo: ${texts[texts.length - 1] ?? ''}`;
  const usage = {
    prompt_tokens: texts.reduce((sum, text) => sum + countWords(text), 0),
    completion_tokens: countWords(content),
  };
  if (body.stream === true) {
    return { sse: chatCompletionChunks({ content, model, usage, includeUsage: body.stream_options?.include_usage === true }) };
  }
  return { json: chatCompletion({ content, model, usage }) };
}

function defaultEmbeddings(request: RecordedRequest, defaultDimensions: number): FakeResponse {
  const body = request.body;
  const input: unknown = body?.input;
  const isTokenArray = Array.isArray(input) && input.length > 0 && input.every((item) => typeof item === 'number');
  const inputs = typeof input === 'string' || isTokenArray ? [input] : Array.isArray(input) ? input : undefined;
  if (!inputs || inputs.length === 0) {
    return { error: { status: 400, message: "'input' must be a string or a non-empty array", code: 'invalid_value' } };
  }
  const model = request.flavor === 'azure' ? request.deployment! : body.model;
  if (typeof model !== 'string' || model.length === 0) {
    return { error: { status: 400, message: 'you must provide a model parameter', code: 'missing_model' } };
  }
  const dimensions = typeof body.dimensions === 'number' ? body.dimensions : defaultDimensions;
  const encodingFormat = body.encoding_format === 'base64' ? 'base64' : 'float';
  return { json: embeddingsResponse({ inputs, model, dimensions, encodingFormat }) };
}

function lowerCaseHeaders(headers: Record<string, string> | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) result[name.toLowerCase()] = value;
  return result;
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function hasBearerToken(headers: Record<string, string>): boolean {
  return /^Bearer\s+\S+/i.test(headers['authorization'] ?? '');
}

export async function startFakeOpenAI(options: StartFakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const defaultDimensions = options.defaultEmbeddingDimensions ?? 8;
  const requests: RecordedRequest[] = [];
  const scripts = new Map<FakeRoute, { handler: FakeHandler; seen: number }>();
  const callCounts = new Map<FakeRoute | 'unknown', number>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const wait = (milliseconds: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, milliseconds);
      timers.add(timer);
    });

  function record(incoming: IncomingMessage, rawBody: string): RecordedRequest {
    const url = new URL(incoming.url ?? '/', 'http://127.0.0.1');
    const match = routePatterns
      .map((candidate) => ({ candidate, result: candidate.pattern.exec(url.pathname) }))
      .find(({ result }) => result !== null);
    const route = incoming.method === 'POST' && match ? match.candidate.route : 'unknown';
    const flavor = match?.candidate.flavor ?? (url.pathname.startsWith('/openai/') ? 'azure' : 'openai');
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(incoming.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    let body: any;
    if (rawBody.length > 0) {
      try {
        body = JSON.parse(rawBody);
      } catch {
        body = rawBody;
      }
    }
    const callNumber = (callCounts.get(route) ?? 0) + 1;
    callCounts.set(route, callNumber);
    const recorded: RecordedRequest = {
      route,
      flavor,
      method: incoming.method ?? '',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers,
      body,
      callNumber,
    };
    if (flavor === 'azure') {
      const deployment = match?.result?.[1];
      if (deployment !== undefined) recorded.deployment = decodeURIComponent(deployment);
      const apiVersion = url.searchParams.get('api-version');
      if (apiVersion !== null) recorded.apiVersion = apiVersion;
    }
    requests.push(recorded);
    return recorded;
  }

  function rejection(request: RecordedRequest, rawBody: string): FakeResponse | undefined {
    if (request.route === 'unknown') {
      return { error: { status: 404, message: `Invalid URL (${request.method} ${request.path})` } };
    }
    if (request.flavor === 'openai' && !hasBearerToken(request.headers)) {
      return {
        error: {
          status: 401,
          message:
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
          code: 'invalid_api_key',
        },
      };
    }
    if (request.flavor === 'azure' && !request.headers['api-key'] && !hasBearerToken(request.headers)) {
      return {
        error: {
          status: 401,
          message:
            'Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.',
          code: '401',
        },
      };
    }
    if (request.flavor === 'azure' && !request.apiVersion) {
      return { error: { status: 400, message: 'Missing required query parameter: api-version', code: 'missing_api_version' } };
    }
    if (rawBody.length > 0 && typeof request.body === 'string') {
      return { error: { status: 400, message: 'We could not parse the JSON body of your request.' } };
    }
    return undefined;
  }

  async function scriptedResponse(request: RecordedRequest, route: FakeRoute): Promise<FakeResponse> {
    const script = scripts.get(route);
    if (script === undefined) {
      return route === 'chat' ? defaultChat(request) : defaultEmbeddings(request, defaultDimensions);
    }
    script.seen += 1;
    const handler = script.handler;
    if (typeof handler === 'function') return handler(request);
    if (Array.isArray(handler)) {
      const response = handler[Math.min(script.seen, handler.length) - 1];
      if (response === undefined) throw new Error(`The script for ${route} is an empty list`);
      return response;
    }
    return handler;
  }

  async function send(response: ServerResponse, fakeResponse: FakeResponse): Promise<void> {
    if ('hang' in fakeResponse) return;
    if ('reset' in fakeResponse) {
      response.socket?.resetAndDestroy();
      return;
    }
    if ('delayMs' in fakeResponse && fakeResponse.delayMs) await wait(fakeResponse.delayMs);
    if (response.destroyed || response.writableEnded) return;
    const headers: Record<string, string> = {
      'x-request-id': `req_${randomUUID().replace(/-/g, '')}`,
      ...lowerCaseHeaders(fakeResponse.headers),
    };
    if ('sse' in fakeResponse) {
      response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers });
      for (const event of fakeResponse.sse) response.write(`data: ${JSON.stringify(event)}\n\n`);
      response.end('data: [DONE]\n\n');
      return;
    }
    const [status, body] =
      'error' in fakeResponse
        ? [fakeResponse.error.status, errorBody(fakeResponse.error)]
        : [fakeResponse.status ?? 200, fakeResponse.json];
    response.writeHead(status, { 'content-type': 'application/json', ...headers });
    response.end(JSON.stringify(body));
  }

  async function handle(incoming: IncomingMessage, response: ServerResponse): Promise<void> {
    const rawBody = await readBody(incoming);
    const request = record(incoming, rawBody);
    try {
      const rejected = rejection(request, rawBody);
      const fakeResponse = rejected ?? (await scriptedResponse(request, request.route as FakeRoute));
      await send(response, fakeResponse);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      await send(response, { error: { status: 500, message: `fake-openai handler failed: ${message}` } });
    }
  }

  const server = createServer((incoming, response) => {
    handle(incoming, response).catch(() => response.destroy());
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  let closing: Promise<void> | undefined;

  return {
    url,
    openaiBaseURL: `${url}/v1`,
    azureEndpoint: url,
    requests,
    requestsTo: (route) => requests.filter((request) => request.route === route),
    script: (route, handler) => {
      scripts.set(route, { handler, seen: 0 });
    },
    reset: () => {
      requests.length = 0;
      scripts.clear();
      callCounts.clear();
    },
    close: () => {
      closing ??= new Promise<void>((resolve, reject) => {
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        server.close((error) => (error ? reject(error) : resolve()));
        for (const socket of sockets) socket.destroy();
      });
      return closing;
    },
  };
}
