import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type OpenAI from 'openai';

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
  /**
   * A `text/event-stream` of these events (each JSON-encoded on a `data:` line, written and flushed
   * one by one), then `data: [DONE]`. sseDelayMs (else the request's `x-fake-chunk-delay-ms` header)
   * is the pause between two events.
   */
  | { sse: unknown[]; headers?: Record<string, string>; delayMs?: number; sseDelayMs?: number }
  /**
   * An upstream that breaks mid-stream: these events as for `sse`, a short pause so the client has
   * read them, then the socket is destroyed without `[DONE]` (the client's stream fails).
   */
  | { sseCut: unknown[]; headers?: Record<string, string>; delayMs?: number; sseDelayMs?: number }
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
  /**
   * Streamed answers (`sse`, `sseCut`) whose client closed the connection before the fake had
   * finished them: how a test sees that a caller that went away stopped the upstream request.
   * It changes when the fake notices the close, a moment after the client's abort: poll it.
   */
  readonly streamsAborted: number;
  requestsTo(route: FakeRoute): RecordedRequest[];
  /** Replaces that route's behaviour until reset(); a list starts again at its first item. */
  script(route: FakeRoute, handler: FakeHandler): void;
  /** Clears requests, call numbers, scripts (back to the default behaviour) and streamsAborted. */
  reset(): void;
  /** Closes the server, destroying open and hanging sockets. */
  close(): Promise<void>;
}

export interface StartFakeOpenAIOptions {
  defaultEmbeddingDimensions?: number;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call';

export interface ChatUsage {
  prompt_tokens: number;
  /** Defaults to one per word of the choices' content, reasoning and tool-call arguments. */
  completion_tokens?: number;
  total_tokens?: number;
}

export interface FakeToolCall {
  id: string;
  /** The function called. */
  name: string;
  /** JSON text, as OpenAI sends it. */
  arguments: string;
}

/** One choice of an answer. */
export interface ChatChoiceOptions {
  content: string | null;
  /**
   * Sent as `reasoning_content` (on the message, or as stream deltas before the content), the
   * field DeepSeek, vLLM and LiteLLM use for a reasoning model's thinking.
   */
  reasoning?: string;
  toolCalls?: FakeToolCall[];
  /** Defaults to 'tool_calls' when there are tool calls, else 'stop'. */
  finishReason?: FinishReason;
}

export interface ChatAnswerOptions {
  model: string;
  /** Defaults to 0 prompt tokens and one completion token per word (see ChatUsage). */
  usage?: ChatUsage;
  id?: string;
  /** Adds logprobs for each word of the content, with this many `top_logprobs` each (`logprobs: true`). */
  logprobs?: { topLogprobs: number };
}

/** One choice given by its fields, or several: `choices[i]` is the choice of index i (`n` > 1). */
export type ChatCompletionOptions = ChatAnswerOptions & (ChatChoiceOptions | { choices: ChatChoiceOptions[] });

export type ChatCompletionChunksOptions = ChatCompletionOptions & {
  /** Adds the final usage chunk (and `usage: null` on the others), as `stream_options: { include_usage: true }` does. */
  includeUsage?: boolean;
};

/** What the default behaviour answers a request, before it is put on the wire (see defaultChatAnswer). */
export type ChatAnswer = ChatAnswerOptions & { choices: ChatChoiceOptions[] };

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

function answerChoices(options: ChatCompletionOptions): ChatChoiceOptions[] {
  return 'choices' in options ? options.choices : [options];
}

function finishReasonOf(choice: ChatChoiceOptions): FinishReason {
  return choice.finishReason ?? (choice.toolCalls?.length ? 'tool_calls' : 'stop');
}

function reasoningWords(choices: ChatChoiceOptions[]): number {
  return choices.reduce((sum, choice) => sum + countWords(choice.reasoning ?? ''), 0);
}

function completionWords(choices: ChatChoiceOptions[]): number {
  return choices.reduce(
    (sum, choice) =>
      sum +
      countWords(choice.content ?? '') +
      (choice.toolCalls ?? []).reduce((callSum, call) => callSum + countWords(call.arguments), 0),
    reasoningWords(choices),
  );
}

function chatUsage(choices: ChatChoiceOptions[], usage: ChatUsage | undefined): OpenAI.CompletionUsage {
  const promptTokens = usage?.prompt_tokens ?? 0;
  const completionTokens = usage?.completion_tokens ?? completionWords(choices);
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: usage?.total_tokens ?? promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: reasoningWords(choices),
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

/** The pieces a text streams in: one per word with the spaces after it (the first also keeps those before it). */
export function contentPieces(text: string | null): string[] {
  return text?.match(/\s*\S+\s*|\s+/g) ?? [];
}

/** Tool-call arguments stream in about three pieces, so that there are always 2+ for `{}` and longer. */
function argumentPieces(text: string): string[] {
  const size = Math.max(1, Math.ceil(text.length / 3));
  const pieces: string[] = [];
  for (let start = 0; start < text.length; start += size) pieces.push(text.slice(start, start + size));
  return pieces;
}

function utf8Bytes(text: string): number[] {
  return [...Buffer.from(text, 'utf8')];
}

/**
 * Deterministic logprobs, one entry per content piece: logprob -1/8, -2/8 ... -1 in turn, and the
 * top alternatives are the token itself then `<word>#<rank>`, each 1 less likely than the one before.
 */
export function tokenLogprobs(content: string | null, topLogprobs: number): OpenAI.ChatCompletionTokenLogprob[] {
  return contentPieces(content).map((token, position) => {
    const logprob = -((position % 8) + 1) / 8;
    return {
      token,
      logprob,
      bytes: utf8Bytes(token),
      top_logprobs: Array.from({ length: topLogprobs }, (_, rank) => {
        const alternative = rank === 0 ? token : `${token.trim()}#${rank}`;
        return { token: alternative, logprob: logprob - rank, bytes: utf8Bytes(alternative) };
      }),
    };
  });
}

export function chatCompletion(options: ChatCompletionOptions): OpenAI.ChatCompletion {
  const choices = answerChoices(options);
  return {
    id: options.id ?? completionId(),
    object: 'chat.completion',
    created: nowInSeconds(),
    model: options.model,
    choices: choices.map((choice, index) => ({
      index,
      message: {
        role: 'assistant',
        content: choice.content,
        refusal: null,
        annotations: [],
        ...(choice.toolCalls?.length
          ? {
              tool_calls: choice.toolCalls.map((call) => ({
                id: call.id,
                type: 'function' as const,
                function: { name: call.name, arguments: call.arguments },
              })),
            }
          : {}),
        ...(choice.reasoning === undefined ? {} : { reasoning_content: choice.reasoning }),
      },
      logprobs: options.logprobs
        ? { content: tokenLogprobs(choice.content, options.logprobs.topLogprobs), refusal: null }
        : null,
      finish_reason: finishReasonOf(choice),
    })),
    usage: chatUsage(choices, options.usage),
    service_tier: 'default',
    system_fingerprint: 'fp_fake_openai',
  };
}

type ChunkChoice = Omit<OpenAI.ChatCompletionChunk.Choice, 'index'>;

/** One choice's stream: role, reasoning pieces, content pieces, each tool call (header then arguments), finish. */
function choiceSteps(choice: ChatChoiceOptions, logprobs: ChatAnswerOptions['logprobs']): ChunkChoice[] {
  const step = (delta: ChunkChoice['delta'] & { reasoning_content?: string }): ChunkChoice => ({
    delta,
    logprobs: null,
    finish_reason: null,
  });
  const tokens = logprobs ? tokenLogprobs(choice.content, logprobs.topLogprobs) : [];
  return [
    step({ role: 'assistant', content: choice.content === null ? null : '', refusal: null }),
    ...contentPieces(choice.reasoning ?? '').map((piece) => step({ reasoning_content: piece })),
    ...contentPieces(choice.content).map((piece, position) => ({
      ...step({ content: piece }),
      logprobs: logprobs ? { content: [tokens[position]!], refusal: null } : null,
    })),
    ...(choice.toolCalls ?? []).flatMap((call, index) => [
      step({ tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } }] }),
      ...argumentPieces(call.arguments).map((piece) => step({ tool_calls: [{ index, function: { arguments: piece } }] })),
    ]),
    { ...step({}), finish_reason: finishReasonOf(choice) },
  ];
}

/**
 * The `chat.completion.chunk` events of a stream. Each choice streams its role, its reasoning and
 * content one word per chunk (with its logprobs when asked), its tool calls (a first delta with
 * index, id, type and name, then the arguments in pieces) and its finish reason; with several
 * choices their chunks take turns, one choice per chunk, as OpenAI's do. Then usage if asked.
 */
export function chatCompletionChunks(options: ChatCompletionChunksOptions): OpenAI.ChatCompletionChunk[] {
  const choices = answerChoices(options);
  const envelope = {
    id: options.id ?? completionId(),
    object: 'chat.completion.chunk' as const,
    created: nowInSeconds(),
    model: options.model,
    service_tier: 'default' as const,
    system_fingerprint: 'fp_fake_openai',
  };
  const usageField = options.includeUsage ? { usage: null } : {};
  const steps = choices.map((choice) => choiceSteps(choice, options.logprobs));
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  const longest = Math.max(0, ...steps.map((choiceSteps) => choiceSteps.length));
  for (let position = 0; position < longest; position++) {
    steps.forEach((choiceSteps, index) => {
      const step = choiceSteps[position];
      if (step) chunks.push({ ...envelope, choices: [{ index, ...step }], ...usageField });
    });
  }
  if (options.includeUsage) chunks.push({ ...envelope, choices: [], usage: chatUsage(choices, options.usage) });
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

/** The text of a message's content: the string, or its text parts joined with spaces. */
export function messageText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (part && typeof part === 'object' && typeof part.text === 'string' ? part.text : ''))
      .filter((text) => text.length > 0)
      .join(' ');
  }
  return '';
}

function imageCount(content: unknown): number {
  return Array.isArray(content) ? content.filter((part) => part?.type === 'image_url').length : 0;
}

function functionToolNames(tools: unknown): string[] {
  if (!Array.isArray(tools)) return [];
  return tools
    .map((tool) => (tool?.type === 'function' && typeof tool.function?.name === 'string' ? (tool.function.name as string) : undefined))
    .filter((name) => name !== undefined);
}

function namedToolChoice(body: any): string | undefined {
  const choice = body.tool_choice;
  return choice?.type === 'function' && typeof choice.function?.name === 'string' ? choice.function.name : undefined;
}

/** The tools the default answer calls: none unless the last message is the user's and tool_choice allows it. */
function toolsToCall(body: any, lastMessage: any): string[] {
  const names = functionToolNames(body.tools);
  if (names.length === 0 || body.tool_choice === 'none' || lastMessage?.role !== 'user') return [];
  const named = namedToolChoice(body);
  if (named !== undefined) return [named];
  return names.slice(0, body.parallel_tool_calls !== false ? 2 : 1);
}

/** After tool results, quotes each (with its tool_call_id); else echoes the last message and counts its images. */
function replyText(messages: any[]): string {
  let firstTool = messages.length;
  while (firstTool > 0 && messages[firstTool - 1]?.role === 'tool') firstTool--;
  if (firstTool < messages.length) {
    const results = messages
      .slice(firstTool)
      .map((message) => `tool ${message.tool_call_id} answered ${messageText(message.content)}`);
    return `echo: ${results.join('; ')}`;
  }
  const last = messages[messages.length - 1];
  const text = messageText(last?.content);
  const images = imageCount(last?.content);
  if (images === 0) return `echo: ${text}`;
  return `echo: ${text}${text.length > 0 ? ' ' : ''}[${images} image${images === 1 ? '' : 's'}]`;
}

/**
 * What the default behaviour answers a valid chat body, so a test can build its expectations
 * (`chatCompletion(answer)`, `chatCompletionChunks(answer)`, or the fields themselves). `model`
 * is the body's, or the deployment on Azure. Deterministic:
 * - the text is `echo: <last message's text>`, plus ` [N image(s)]` when that message has image
 *   parts; after tool messages it is `echo: tool <tool_call_id> answered <result>` for each;
 * - with function `tools`, tool_choice not 'none' and the user's message last, each choice calls
 *   the tool named by tool_choice, else the first one (the first two when parallel_tool_calls is
 *   not false), with id `call_<messages>_<choice>_<call>` and arguments `{"query": <user text>}`;
 * - `n` choices, choice i > 0 with ` (choice i)` after its text (or its query);
 * - a model whose name contains `reason` adds reasoning `Thinking about "<last text>" first.`;
 * - `logprobs: true` adds logprobs (`top_logprobs` alternatives each); usage counts words.
 */
export function defaultChatAnswer(body: any, model: string = body?.model): ChatAnswer {
  const messages: any[] = body.messages;
  const last = messages[messages.length - 1];
  const userText = messageText(last?.content);
  const tools = toolsToCall(body, last);
  const reasoning = /reason/i.test(model) ? `Thinking about "${userText}" first.` : undefined;
  const count = typeof body.n === 'number' ? body.n : 1;
  const choices = Array.from({ length: count }, (_, index): ChatChoiceOptions => {
    const suffix = index === 0 ? '' : ` (choice ${index})`;
    const fields = reasoning === undefined ? {} : { reasoning };
    if (tools.length === 0) return { content: replyText(messages) + suffix, ...fields };
    return {
      content: null,
      ...fields,
      toolCalls: tools.map((name, position) => ({
        id: `call_${messages.length}_${index}_${position}`,
        name,
        arguments: JSON.stringify({ query: userText + suffix }),
      })),
    };
  });
  return {
    model,
    choices,
    usage: { prompt_tokens: messages.reduce((sum, message) => sum + countWords(messageText(message?.content)), 0) },
    ...(body.logprobs === true ? { logprobs: { topLogprobs: typeof body.top_logprobs === 'number' ? body.top_logprobs : 0 } } : {}),
  };
}

function integerOutside(value: unknown, min: number, max: number): boolean {
  return value !== undefined && value !== null && !(Number.isInteger(value) && (value as number) >= min && (value as number) <= max);
}

/** The 400 OpenAI would answer this chat body, if any (only the checks the default answer relies on). */
function chatBodyError(body: any, model: unknown): FakeResponse | undefined {
  if (!Array.isArray(body?.messages) || body.messages.length === 0) {
    return { error: { status: 400, message: "'messages' must be a non-empty array", code: 'invalid_value' } };
  }
  if (typeof model !== 'string' || model.length === 0) {
    return { error: { status: 400, message: 'you must provide a model parameter', code: 'missing_model' } };
  }
  if (integerOutside(body.n, 1, 128)) {
    return { error: { status: 400, message: `Invalid 'n': expected an integer from 1 to 128.`, code: 'invalid_value' } };
  }
  if (integerOutside(body.top_logprobs, 0, 20)) {
    return { error: { status: 400, message: `Invalid 'top_logprobs': expected an integer from 0 to 20.`, code: 'invalid_value' } };
  }
  const named = namedToolChoice(body);
  if (named !== undefined && !functionToolNames(body.tools).includes(named)) {
    return { error: { status: 400, message: `Invalid 'tool_choice': no function named '${named}' in 'tools'.`, code: 'invalid_value' } };
  }
  return undefined;
}

/** The default chat behaviour; a script may wrap it (e.g. to add `sseDelayMs` to its stream). */
export function defaultChatResponse(request: RecordedRequest): FakeResponse {
  const body = request.body;
  const model = request.flavor === 'azure' ? request.deployment! : body?.model;
  const invalid = chatBodyError(body, model);
  if (invalid) return invalid;
  const answer = defaultChatAnswer(body, model);
  if (body.stream === true) {
    return { sse: chatCompletionChunks({ ...answer, includeUsage: body.stream_options?.include_usage === true }) };
  }
  return { json: chatCompletion(answer) };
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

/** The pause between two streamed events a request asks for with `x-fake-chunk-delay-ms` (at most 10 s). */
function chunkDelayMs(request: RecordedRequest | undefined): number {
  const value = Number(request?.headers['x-fake-chunk-delay-ms']);
  return Number.isFinite(value) && value > 0 ? Math.min(value, 10_000) : 0;
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
  let streamsAborted = 0;

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
      return route === 'chat' ? defaultChatResponse(request) : defaultEmbeddings(request, defaultDimensions);
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

  /** Counts the stream in streamsAborted if its connection closes before the fake calls finish(). */
  function watchStream(response: ServerResponse) {
    const state = { closed: false, finished: false };
    response.once('close', () => {
      state.closed = true;
      if (!state.finished) streamsAborted += 1;
    });
    return state;
  }

  async function send(response: ServerResponse, fakeResponse: FakeResponse, request?: RecordedRequest): Promise<void> {
    if ('hang' in fakeResponse) return;
    if ('reset' in fakeResponse) {
      response.socket?.resetAndDestroy();
      return;
    }
    const isStream = 'sse' in fakeResponse || 'sseCut' in fakeResponse;
    const stream = isStream ? watchStream(response) : undefined;
    if (fakeResponse.delayMs) await wait(fakeResponse.delayMs);
    if (response.destroyed || response.writableEnded || stream?.closed) return;
    const headers: Record<string, string> = {
      'x-request-id': `req_${randomUUID().replace(/-/g, '')}`,
      ...lowerCaseHeaders(fakeResponse.headers),
    };
    if ('error' in fakeResponse || 'json' in fakeResponse) {
      const [status, body] =
        'error' in fakeResponse
          ? [fakeResponse.error.status, errorBody(fakeResponse.error)]
          : [fakeResponse.status ?? 200, fakeResponse.json];
      response.writeHead(status, { 'content-type': 'application/json', ...headers });
      response.end(JSON.stringify(body));
      return;
    }
    const events = 'sse' in fakeResponse ? fakeResponse.sse : fakeResponse.sseCut;
    response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers });
    response.flushHeaders();
    const pauseMs = fakeResponse.sseDelayMs ?? chunkDelayMs(request);
    // One write per event, so that each reaches the client as it is sent.
    for (const [position, event] of events.entries()) {
      if (position > 0 && pauseMs > 0) await wait(pauseMs);
      if (stream!.closed) return;
      response.write(`data: ${JSON.stringify(event)}\n\n`);
    }
    if ('sseCut' in fakeResponse) {
      // Long enough for the client to read the events before the connection breaks.
      await wait(50);
      if (stream!.closed) return;
      stream!.finished = true;
      response.socket?.destroy();
      return;
    }
    stream!.finished = true;
    response.end('data: [DONE]\n\n');
  }

  async function handle(incoming: IncomingMessage, response: ServerResponse): Promise<void> {
    const rawBody = await readBody(incoming);
    const request = record(incoming, rawBody);
    try {
      const rejected = rejection(request, rawBody);
      const fakeResponse = rejected ?? (await scriptedResponse(request, request.route as FakeRoute));
      await send(response, fakeResponse, request);
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
    get streamsAborted() {
      return streamsAborted;
    },
    requestsTo: (route) => requests.filter((request) => request.route === route),
    script: (route, handler) => {
      scripts.set(route, { handler, seen: 0 });
    },
    reset: () => {
      requests.length = 0;
      scripts.clear();
      callCounts.clear();
      streamsAborted = 0;
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
