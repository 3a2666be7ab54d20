/** Stable, machine-readable codes of every error Callboard reports. */
export type ErrorCode =
  | 'BAD_USER_INPUT'
  // Refusals of what a web page could send without the operator knowing (src/http/browser-safety.ts).
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'CSRF_PREVENTED'
  | 'HOST_NOT_ALLOWED'
  /** A request body past [Limits] MAX_BODY_BYTES (HTTP 413), refused before it is read in full. */
  | 'PAYLOAD_TOO_LARGE'
  | 'CONFIG_INVALID'
  | 'UNKNOWN_PROVIDER'
  | 'PROVIDER_NOT_CONFIGURED'
  | 'PROVIDER_AUTH_FAILED'
  | 'PROVIDER_BAD_REQUEST'
  | 'PROVIDER_NOT_FOUND'
  | 'PROVIDER_RATE_LIMITED'
  | 'PROVIDER_TIMEOUT'
  | 'PROVIDER_UNAVAILABLE'
  | 'PROVIDER_ERROR'
  /** The provider's stream broke off after it began: the answer is incomplete (never cached). */
  | 'STREAM_INTERRUPTED'
  | 'ABORTED'
  | 'RETRY_EXHAUSTED'
  | 'DEADLINE_EXCEEDED'
  | 'TEMPLATE_ERROR'
  | 'NOT_FOUND'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  /** An API key's requests or tokens per minute are used up; details.retryAfterSeconds says when to come back. */
  | 'RATE_LIMITED'
  /** An API key's USD budget for the day or the month is used up. */
  | 'BUDGET_EXCEEDED'
  | 'QUERY_TOO_LARGE'
  | 'QUERY_TOO_DEEP'
  | 'TOO_MANY_ALIASES'
  | 'TOO_MANY_DIRECTIVES'
  | 'QUERY_TOO_COMPLEX'
  | 'TOO_MANY_PAID_OPERATIONS'
  | 'QUERY_TIMEOUT'
  /** This instance already serves [Limits] MAX_SUBSCRIPTIONS subscriptions. */
  | 'TOO_MANY_SUBSCRIPTIONS'
  | 'DATABASE_UNAVAILABLE';

/** The base of every error Callboard raises on purpose: a code and details safe to show a client. */
export class CallboardError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'CallboardError';
    this.code = code;
    this.details = options.details ?? {};
  }
}

export function isCallboardError(value: unknown): value is CallboardError {
  return value instanceof CallboardError;
}

export function badUserInput(message: string, details: Record<string, unknown> = {}): CallboardError {
  return new CallboardError('BAD_USER_INPUT', message, { details });
}

/** One problem found in the configuration. */
export interface ConfigProblem {
  /** Where the value came from: a file path, an environment variable or "defaults". */
  source: string;
  section: string;
  key: string;
  message: string;
}

/** Every configuration problem found at once, so a person can fix them in one go. */
export class ConfigError extends CallboardError {
  readonly problems: ConfigProblem[];

  constructor(problems: ConfigProblem[]) {
    const lines = problems.map((p) => `  - ${p.source}: [${p.section}]${p.key ? ` ${p.key}` : ''}: ${p.message}`);
    super('CONFIG_INVALID', `Invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${lines.join('\n')}`, {
      details: { problems },
    });
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** An upstream provider failure, already mapped from the SDK's error classes. */
export class ProviderError extends CallboardError {
  /** The HTTP status the provider answered with, when it answered. */
  readonly status: number | undefined;
  /** How long the provider asked us to wait (Retry-After / retry-after-ms), in milliseconds. */
  readonly retryAfterMs: number | undefined;
  readonly requestId: string | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { status?: number; retryAfterMs?: number; requestId?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(code, message, {
      details: { ...options.details, ...(options.status === undefined ? {} : { status: options.status }) },
      cause: options.cause,
    });
    this.name = 'ProviderError';
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
    this.requestId = options.requestId;
  }
}

/** Which configured bound of `[Limits]` a request went past. */
export type QueryLimitKey = 'MAX_QUERY_TOKENS' | 'MAX_QUERY_DEPTH' | 'MAX_ALIASES' | 'MAX_DIRECTIVES' | 'MAX_QUERY_COST' | 'MAX_PAID_OPERATIONS';

const queryLimitCodes: Record<QueryLimitKey, ErrorCode> = {
  MAX_QUERY_TOKENS: 'QUERY_TOO_LARGE',
  MAX_QUERY_DEPTH: 'QUERY_TOO_DEEP',
  MAX_ALIASES: 'TOO_MANY_ALIASES',
  MAX_DIRECTIVES: 'TOO_MANY_DIRECTIVES',
  MAX_QUERY_COST: 'QUERY_TOO_COMPLEX',
  MAX_PAID_OPERATIONS: 'TOO_MANY_PAID_OPERATIONS',
};

/** A request refused before anything ran because it goes past one of the `[Limits]`. */
export class QueryLimitError extends CallboardError {
  readonly limit: QueryLimitKey;

  constructor(limit: QueryLimitKey, message: string, details: { max: number; actual?: number }) {
    super(queryLimitCodes[limit], message, { details: { limit, ...details } });
    this.name = 'QueryLimitError';
    this.limit = limit;
  }
}

/** Which configured bound of `[Limits]` one call's input went past. */
export type InputLimitKey = 'MAX_MESSAGES' | 'MAX_CHARACTERS_PER_CALL' | 'MAX_METADATA_DEPTH' | 'MAX_METADATA_BYTES' | 'MAX_TAGS' | 'MAX_TAG_LENGTH';

/** A call refused before it went anywhere: its input goes past one of the `[Limits]`; `details.field` names the input. */
export class InputLimitError extends CallboardError {
  readonly limit: InputLimitKey;
  readonly field: string;

  constructor(limit: InputLimitKey, field: string, message: string, details: { max: number; actual?: number; index?: number }) {
    super('BAD_USER_INPUT', message, { details: { field, limit, ...details } });
    this.name = 'InputLimitError';
    this.limit = limit;
    this.field = field;
  }
}
