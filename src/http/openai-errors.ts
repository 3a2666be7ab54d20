import { isDatabaseUnreachable } from '../db/database-errors.ts';
import { CallboardError, isCallboardError, ProviderError, type ErrorCode } from '../errors.ts';

/** The HTTP status of each code on the REST door, where the OpenAI SDKs pick their error classes by status. */
const statusByCode: Partial<Record<ErrorCode, number>> = {
  BAD_USER_INPUT: 400,
  TEMPLATE_ERROR: 400,
  UNKNOWN_PROVIDER: 400,
  PROVIDER_BAD_REQUEST: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  CSRF_PREVENTED: 403,
  HOST_NOT_ALLOWED: 403,
  NOT_FOUND: 404,
  PROVIDER_NOT_FOUND: 404,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  BUDGET_EXCEEDED: 429,
  PROVIDER_RATE_LIMITED: 429,
  ABORTED: 499,
  // The provider refused Callboard's own key: the gateway's fault, not the caller's.
  PROVIDER_AUTH_FAILED: 502,
  PROVIDER_UNAVAILABLE: 502,
  PROVIDER_ERROR: 502,
  RETRY_EXHAUSTED: 502,
  STREAM_INTERRUPTED: 502,
  PROVIDER_NOT_CONFIGURED: 503,
  DATABASE_UNAVAILABLE: 503,
  PROVIDER_TIMEOUT: 504,
  DEADLINE_EXCEEDED: 504,
};

/** OpenAI's `error.type` for a status. */
function typeOf(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

export interface OpenAiError {
  status: number;
  body: { error: { message: string; type: string; param: string | null; code: string; details?: Record<string, unknown> } };
  headers: Record<string, string>;
}

/**
 * Any error as the REST door answers it: OpenAI's error shape (`error.message`, `type`, `param`,
 * `code`, the Callboard code) with the status the OpenAI SDKs map to their own error classes, and
 * `retry-after` when a refusal says when to come back. Anything unexpected is a masked 500.
 */
export function toOpenAiError(error: unknown): OpenAiError {
  const known: CallboardError | null = isCallboardError(error)
    ? error
    : isDatabaseUnreachable(error)
      ? new CallboardError('DATABASE_UNAVAILABLE', 'The database is unavailable right now; try again in a few seconds.')
      : null;
  if (!known) {
    return { status: 500, body: { error: { message: 'Unexpected error.', type: 'server_error', param: null, code: 'INTERNAL_SERVER_ERROR' } }, headers: {} };
  }
  const status = statusByCode[known.code] ?? (known instanceof ProviderError && known.status ? 502 : 500);
  const headers: Record<string, string> = {};
  const retryAfter = known.details.retryAfterSeconds;
  if (typeof retryAfter === 'number') headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfter)));
  const field = known.details.field;
  const details = Object.keys(known.details).length > 0 ? { details: known.details } : {};
  return {
    status,
    body: { error: { message: known.message, type: typeOf(status), param: typeof field === 'string' ? field : null, code: known.code, ...details } },
    headers,
  };
}
