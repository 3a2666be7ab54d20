import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
// Bundled into dist/client/index.js by scripts/build.mjs: the client needs nothing installed beside it.
import { print, type DocumentNode, type OperationDefinitionNode } from 'graphql';
import { parseSseEvent } from './sse.js';

/** One error of a GraphQL answer, as Callboard sends it: `extensions.code` is a stable code (README, Errors). */
export interface CallboardGraphQLError {
  message: string;
  path?: readonly (string | number)[];
  extensions?: { code?: string; details?: Record<string, unknown>; [key: string]: unknown };
}

/**
 * A request or subscription that failed. `code` is the first GraphQL error's `extensions.code`
 * (UNAUTHENTICATED, FORBIDDEN, BAD_USER_INPUT, QUERY_TOO_COMPLEX, ...), or one of the client's own:
 * BAD_RESPONSE (an answer that is no GraphQL result), EVENT_TOO_LARGE (a subscription event past
 * `maxEventLength`), GRAPHQL_ERROR (an error without a code).
 */
export class CallboardClientError extends Error {
  override readonly name = 'CallboardClientError';
  readonly code: string;
  /** The HTTP status of the answer (200 for most GraphQL errors). */
  readonly status: number | undefined;
  /** Every error of the answer. */
  readonly errors: readonly CallboardGraphQLError[];
  /** What the answer held beside its errors (the fields that did resolve), if anything. */
  readonly data: unknown;

  constructor(code: string, message: string, options: { status?: number; errors?: readonly CallboardGraphQLError[]; data?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status;
    this.errors = options.errors ?? [];
    this.data = options.data ?? null;
  }
}

export interface CallboardClientOptions {
  /** The GraphQL endpoint, e.g. `http://127.0.0.1:4000/graphql`. */
  url: string;
  /** A Callboard API key (`cb_...`) or the master key, sent as `Authorization: Bearer`. Not needed in open mode. */
  apiKey?: string;
  /** The fetch to use; the global one by default (browsers, Node.js 18+). */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** Headers sent with every request, e.g. `{ 'x-callboard-actor': 'ops dashboard' }`. */
  headers?: Record<string, string>;
  /** The longest subscription event the client holds, in characters (default 16 Mi): a longer one fails with EVENT_TOO_LARGE. */
  maxEventLength?: number;
}

export interface RequestOptions {
  /** Aborts the request (e.g. `AbortSignal.timeout(10_000)`, or a component that unmounts). */
  signal?: AbortSignal;
  /** Headers for this request only. */
  headers?: Record<string, string>;
}

/** Variables may be left out when the operation has no required one. */
type VariablesArgs<TVariables> = Record<string, never> extends TVariables
  ? [variables?: TVariables, options?: RequestOptions]
  : [variables: TVariables, options?: RequestOptions];

export interface CallboardClient {
  /** Runs a query or mutation; resolves with its `data`, or rejects with a CallboardClientError carrying the error's code. */
  request<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, ...args: VariablesArgs<TVariables>): Promise<TResult>;
  /**
   * Subscribes (GraphQL over Server-Sent Events, as Callboard serves it at the same URL): an async
   * iterator of each event's `data`. It reads the stream only as fast as it is iterated, holding at
   * most one event; it ends when the server completes the stream (the server stops, or lost its
   * database connection: subscribe again and catch up with a query), and rejects with a
   * CallboardClientError for a refused subscription. Leaving a `for await` loop, or aborting
   * `options.signal` (which rejects with the signal's reason), closes the connection.
   */
  subscribe<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, ...args: VariablesArgs<TVariables>): AsyncIterableIterator<TResult>;
}

const defaultMaxEventBytes = 16 * 1024 * 1024;

/** The text and name of a document, printed once per document. */
const printed = new WeakMap<DocumentNode, { query: string; operationName: string | undefined }>();
function source(document: DocumentNode): { query: string; operationName: string | undefined } {
  let known = printed.get(document);
  if (!known) {
    const operation = document.definitions.find((definition): definition is OperationDefinitionNode => definition.kind === 'OperationDefinition');
    known = { query: print(document), operationName: operation?.name?.value };
    printed.set(document, known);
  }
  return known;
}

interface GraphQLResult {
  data?: unknown;
  errors?: CallboardGraphQLError[];
}

function isResult(value: unknown): value is GraphQLResult {
  return typeof value === 'object' && value !== null && ('data' in value || 'errors' in value);
}

/** The error of a result with errors; null when it has none. */
function errorOf(result: GraphQLResult, status: number): CallboardClientError | null {
  const errors = Array.isArray(result.errors) ? result.errors : [];
  if (errors.length === 0) return null;
  const first = errors[0]!;
  const code = typeof first.extensions?.code === 'string' ? first.extensions.code : 'GRAPHQL_ERROR';
  return new CallboardClientError(code, first.message, { status, errors, data: result.data });
}

/** A refusal or an answer that is not an event stream / not JSON, as an error. */
async function failureOf(response: Response): Promise<CallboardClientError> {
  const text = await response.text().catch(() => '');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return new CallboardClientError('BAD_RESPONSE', `HTTP ${response.status}: not a GraphQL answer (${text.slice(0, 200)})`, { status: response.status });
  }
  return (
    (isResult(body) && errorOf(body, response.status)) ||
    new CallboardClientError('BAD_RESPONSE', `HTTP ${response.status}: a GraphQL answer without data`, { status: response.status })
  );
}

/** A small client for Callboard's GraphQL API: typed requests and subscriptions, with fetch and nothing else. */
export function createCallboardClient(options: CallboardClientOptions): CallboardClient {
  const fetchImpl = options.fetch ?? ((input: string, init: RequestInit) => globalThis.fetch(input, init));
  const maxEventLength = options.maxEventLength ?? defaultMaxEventBytes;
  const headersFor = (accept: string, extra: Record<string, string> | undefined): Record<string, string> => ({
    'content-type': 'application/json',
    accept,
    ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
    ...options.headers,
    ...extra,
  });
  const bodyOf = (document: DocumentNode, variables: unknown) => JSON.stringify({ ...source(document), variables: variables ?? {} });

  async function request<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, ...[variables, requestOptions]: VariablesArgs<TVariables>): Promise<TResult> {
    const response = await fetchImpl(options.url, {
      method: 'POST',
      headers: headersFor('application/graphql-response+json, application/json;q=0.9', requestOptions?.headers),
      body: bodyOf(document, variables),
      signal: requestOptions?.signal,
    });
    const text = await response.text();
    let result: unknown;
    try {
      result = JSON.parse(text);
    } catch {
      throw new CallboardClientError('BAD_RESPONSE', `HTTP ${response.status}: not a GraphQL answer (${text.slice(0, 200)})`, { status: response.status });
    }
    if (!isResult(result)) throw new CallboardClientError('BAD_RESPONSE', `HTTP ${response.status}: not a GraphQL answer`, { status: response.status });
    const error = errorOf(result, response.status);
    if (error) throw error;
    if (result.data === undefined || result.data === null) throw new CallboardClientError('BAD_RESPONSE', `HTTP ${response.status}: a GraphQL answer without data`, { status: response.status });
    return result.data as TResult;
  }

  async function* subscribe<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, ...[variables, requestOptions]: VariablesArgs<TVariables>): AsyncGenerator<TResult, void, undefined> {
    const abort = new AbortController();
    const signal = requestOptions?.signal;
    const onAbort = () => abort.abort(signal!.reason);
    signal?.throwIfAborted();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const response = await fetchImpl(options.url, {
        method: 'POST',
        headers: headersFor('text/event-stream', requestOptions?.headers),
        body: bodyOf(document, variables),
        signal: abort.signal,
      });
      if (!response.headers.get('content-type')?.startsWith('text/event-stream') || !response.body) throw await failureOf(response);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      /** How far `buffer` is known to hold no blank line. */
      let scanned = 0;
      /** The last chunk ended with CR: an LF starting the next one belongs to it. */
      let carriageReturn = false;
      try {
        for (;;) {
          // One event per blank line (SSE's line ends: CRLF, LF or CR); `:` lines are the server's keep-alive pings.
          const boundary = buffer.indexOf('\n\n', Math.max(0, scanned - 1));
          if ((boundary < 0 ? buffer.length : boundary) > maxEventLength) {
            throw new CallboardClientError('EVENT_TOO_LARGE', `a subscription event is longer than ${maxEventLength} characters (maxEventLength)`);
          }
          if (boundary < 0) {
            scanned = buffer.length;
            const chunk = await reader.read();
            if (chunk.done) return;
            let text = decoder.decode(chunk.value, { stream: true });
            if (text === '') continue;
            if (carriageReturn && text.startsWith('\n')) text = text.slice(1);
            carriageReturn = text.endsWith('\r');
            buffer += text.replace(/\r\n?/g, '\n');
            continue;
          }
          const block = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          scanned = 0;
          const { event, data } = parseSseEvent(block);
          if (event === 'complete') return;
          if (event !== 'next' || data === null) continue;
          let result: unknown;
          try {
            result = JSON.parse(data);
          } catch {
            throw new CallboardClientError('BAD_RESPONSE', 'a subscription event that is not JSON', { status: response.status });
          }
          if (!isResult(result)) throw new CallboardClientError('BAD_RESPONSE', 'a subscription event that is not a GraphQL result', { status: response.status });
          const error = errorOf(result, response.status);
          if (error) throw error;
          yield result.data as TResult;
        }
      } finally {
        await reader.cancel().catch(() => {});
      }
    } catch (error) {
      // An abort asked for by the caller rejects with the caller's reason, as fetch does.
      if (signal?.aborted) throw signal.reason;
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      abort.abort();
    }
  }

  return { request, subscribe };
}
