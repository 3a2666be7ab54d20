import type { ErrorCode } from '../errors.ts';

/**
 * A refusal answered before any GraphQL runs (no key, a rebound Host, a form post, a body too large):
 * a GraphQL-shaped JSON body with a code, never an empty one.
 */
export function refusal(
  fetchAPI: { Response: typeof Response },
  status: number,
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> },
  headers: Record<string, string> = {},
): Response {
  const extensions = { code: error.code, ...(error.details && Object.keys(error.details).length > 0 ? { details: error.details } : {}) };
  return new fetchAPI.Response(JSON.stringify({ errors: [{ message: error.message, extensions }] }), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
  });
}
