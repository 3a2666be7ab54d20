import type { ServerResponse } from 'node:http';
import { getOperationAST, Kind, type DocumentNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Identity } from '../auth/identity.ts';
import { newId } from '../ids.ts';
import type { CallRecord } from '../llm/history.ts';
import type { CallsOfRequest } from '../llm/pipeline/record.ts';
import type { Logger } from '../logger.ts';
import type { Tracing } from './tracing.ts';

export const requestIdHeader = 'x-request-id';

/** A caller's request id is kept when it is this: bounded, and nothing a log reader could mistake for something else. */
const saneRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

/** The `x-request-id` a caller sent, when it is sane; otherwise a new one. */
export function requestIdOf(header: string | null): string {
  return header !== null && saneRequestId.test(header) ? header : newId();
}

/**
 * One HTTP request as its log line and trace will tell it: made where the request enters, carried
 * explicitly (GraphQL context, the REST door, the calls' RecordedOptions), written once when the
 * response is finished.
 */
export interface RequestLog extends CallsOfRequest {
  id: string;
  method: string;
  path: string;
  /** The route as a template (`/graphql`, `/v1/models/{id}`); null: none of Callboard's. */
  route: string | null;
  /** `mutation sendMessage`, `query Dashboard`, `POST /v1/chat/completions`. */
  operation: string | null;
  /** performance.now() and Date.now() when the request came. */
  startedAt: number;
  startedAtMs: number;
  /** The codes of the GraphQL errors answered (a GraphQL error is no HTTP error): distinct, at most a few. */
  errorCodes: string[] | null;
  /** W3C trace context of the request, read only while tracing. */
  traceparent: string | null;
  tracestate: string | null;
}

/** What the log line says of one call. */
export interface CallSummary {
  callId: string;
  kind: string;
  model: string;
  cacheStatus: string;
  status: string;
  errorCode: string | null;
  /** Each attempt's HTTP status, or its error code when no answer came (PROVIDER_TIMEOUT, ...). */
  attempts: (number | string | null)[];
}

/** A request with more calls (aliases of one field) lists the first ones; `callCount` says how many there were. */
const maxListedCalls = 50;
const maxOperationCharacters = 200;
const maxPathCharacters = 200;
const maxErrorCodes = 5;
/** Unnamed operations are named after their first root fields. */
const maxNamedFields = 3;
const knownRoutes = new Set(['/graphql', '/health', '/ready', '/metrics']);
/** Probes and scrapes: logged at debug, not info, so that a load balancer's checks and Prometheus do not fill the log. */
const probePaths = new Set(['/health', '/ready', '/metrics']);

export function summarizeCall(call: CallRecord): CallSummary {
  return {
    callId: call.id,
    kind: call.kind,
    model: call.model,
    cacheStatus: call.cacheStatus,
    status: call.status,
    errorCode: call.errorCode,
    attempts: call.attempts.map((attempt) => attempt.httpStatus ?? attempt.errorCode),
  };
}

/** The caller as the line names it: the key's id and label (never the key), or master / open mode. */
function callerOf(identity: Identity | undefined) {
  if (!identity) return null;
  return identity.apiKey ? { kind: identity.kind, keyId: identity.apiKey.id, label: identity.label } : { kind: identity.kind, label: identity.label };
}

/** `mutation sendMessage` for `mutation { sendMessage(...) }`, `query Dashboard` for `query Dashboard {...}`. */
export function operationOf(document: DocumentNode, operationName: string | null | undefined): string | null {
  const operation = getOperationAST(document, operationName);
  if (!operation) return null;
  let name = operation.name?.value;
  if (!name) {
    const fields: string[] = [];
    for (const selection of operation.selectionSet.selections) {
      if (selection.kind === Kind.FIELD) fields.push(selection.name.value);
      if (fields.length === maxNamedFields) break;
    }
    name = fields.join(',') + (operation.selectionSet.selections.length > fields.length ? ',…' : '');
  }
  return `${operation.operation} ${name}`.slice(0, maxOperationCharacters);
}

export interface RequestLogging {
  /** The first plugin of the app: it makes each request's log, answers its id, and writes its line. */
  plugin: Plugin<{ requestLog?: RequestLog }>;
  /** The request's log (made now if its plugin did not see it). */
  of(request: Request): RequestLog;
}

export function createRequestLogging(options: { logger: Logger; identityOf: (request: Request) => Identity | undefined; tracing?: Tracing | null }): RequestLogging {
  const { logger, identityOf } = options;
  const tracing = options.tracing ?? null;
  const logs = new WeakMap<Request, RequestLog>();

  function start(request: Request, path: string): RequestLog {
    const startedAt = performance.now();
    const log: RequestLog = {
      id: requestIdOf(request.headers.get(requestIdHeader)),
      method: request.method,
      path: path.slice(0, maxPathCharacters),
      route: knownRoutes.has(path) ? path : null,
      operation: null,
      errorCodes: null,
      startedAt,
      startedAtMs: Date.now(),
      traceparent: tracing ? request.headers.get('traceparent') : null,
      tracestate: tracing ? request.headers.get('tracestate') : null,
      calls: [],
    };
    logs.set(request, log);
    return log;
  }

  function of(request: Request): RequestLog {
    return logs.get(request) ?? start(request, new URL(request.url, 'http://localhost').pathname);
  }

  /** The line, built once: the calls were appended as they finished. */
  function write(log: RequestLog, request: Request, status: number, finished: boolean): void {
    const level = probePaths.has(log.path) ? 'debug' : 'info';
    if (!tracing && !logger.isLevelEnabled(level)) return;
    const durationMs = Math.round((performance.now() - log.startedAt) * 100) / 100;
    const identity = identityOf(request);
    const calls = log.calls.length > maxListedCalls ? log.calls.slice(0, maxListedCalls) : log.calls;
    const line = {
      reqId: log.id,
      method: log.method,
      path: log.path,
      status,
      operation: log.operation,
      ...(log.errorCodes ? { errorCodes: log.errorCodes } : {}),
      caller: callerOf(identity),
      tenant: identity?.tenant ?? null,
      calls: calls.map(summarizeCall),
      ...(log.calls.length > maxListedCalls ? { callCount: log.calls.length } : {}),
      durationMs,
      // The client went away before the whole answer was sent.
      ...(finished ? {} : { aborted: true }),
    };
    logger[level](line, 'request');
    tracing?.record(log, { status, durationMs, tenant: line.tenant });
  }

  return {
    of,
    plugin: {
      onRequest({ request, url }) {
        start(request, url.pathname);
      },
      onValidate({ params, context }) {
        // Named at validation, so that a request refused by it still says what it asked.
        const { request, params: graphqlParams } = context as { request?: Request; params?: { operationName?: string | null } };
        if (request) of(request).operation = operationOf(params.documentAST, graphqlParams?.operationName);
      },
      onResultProcess({ request, result }) {
        // One result (a query or mutation); a subscription's events are not looked at.
        const errors = !Array.isArray(result) && result && typeof result === 'object' && 'errors' in result ? result.errors : undefined;
        if (!errors || errors.length === 0) return;
        const codes = new Set<string>();
        for (const error of errors) {
          codes.add(String((error as { extensions?: { code?: unknown } }).extensions?.code ?? 'INTERNAL_SERVER_ERROR').slice(0, 64));
          if (codes.size === maxErrorCodes) break;
        }
        of(request).errorCodes = [...codes];
      },
      onResponse({ request, response, serverContext }) {
        const log = of(request);
        try {
          response.headers.set(requestIdHeader, log.id);
        } catch {
          // A response with immutable headers (one passed on from fetch) goes out without it.
        }
        // Behind node:http, the line is written once the answer is sent (a stream's calls end before it); through
        // `fetch` (tests, other runtimes), when the answer is made.
        const res = (serverContext as { res?: ServerResponse } | undefined)?.res;
        if (res && typeof res.once === 'function' && !res.closed) res.once('close', () => write(log, request, response.status, res.writableFinished));
        else write(log, request, response.status, true);
      },
    },
  };
}
