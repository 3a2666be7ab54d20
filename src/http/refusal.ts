import { CallboardError, type ErrorCode } from '../errors.ts';
import { toOpenAiError } from './openai-errors.ts';

/** The OpenAI-compatible REST door's paths: their refusals take OpenAI's error shape. */
export function isOpenAiPath(pathname: string): boolean {
  return pathname === '/v1' || pathname.startsWith('/v1/');
}

/** The paths whose refusals take OpenAI's error shape: the REST door's, and /metrics (no GraphQL there either). */
export function takesOpenAiErrorShape(pathname: string): boolean {
  return isOpenAiPath(pathname) || pathname === '/metrics';
}

/**
 * A refusal answered before any operation runs (no key, a rebound Host, a form post, a body too
 * large): a JSON body with a code, never an empty one. GraphQL's shape, or OpenAI's on /v1 and /metrics.
 */
export function refusal(
  fetchAPI: { Response: typeof Response },
  url: URL,
  status: number,
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> },
  headers: Record<string, string> = {},
): Response {
  let body: unknown;
  if (takesOpenAiErrorShape(url.pathname)) body = toOpenAiError(new CallboardError(error.code, error.message, { details: error.details })).body;
  else {
    const extensions = { code: error.code, ...(error.details && Object.keys(error.details).length > 0 ? { details: error.details } : {}) };
    body = { errors: [{ message: error.message, extensions }] };
  }
  return new fetchAPI.Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json; charset=utf-8', ...headers } });
}
