/**
 * How a failed statement failed: the database could not be reached (retry the same rows later),
 * the rows themselves were refused (a data error: split them and find the bad one), or anything
 * else (a schema problem, a bug), which no row of ours can fix either.
 */
export type DatabaseFailure = 'unreachable' | 'data' | 'other';

/** Errors of the socket under pg, before or during a query. */
const socketCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED']);

/**
 * SQLSTATE classes and codes that say "not now", not "not this row": 08 connection exceptions,
 * 53 insufficient resources (too many connections, disk full), 57P01-57P03 (administrator,
 * crash or start-up shutdown), 40 transaction rollbacks (serialization, deadlock) and 57014 (a
 * statement cancelled by a timeout).
 */
function isTransientSqlState(code: string): boolean {
  return /^(08|53|40)/.test(code) || /^57P0[1-3]$/.test(code) || code === '57014';
}

/**
 * Classes that a row's own content can cause: 21 cardinality (a row touched twice by one
 * statement), 22 data exceptions (invalid JSON text, an unpaired surrogate, a NUL, a number out of
 * range), 23 integrity violations, 54 program limits (a value nested or sized past what Postgres
 * takes), 2F routine exceptions and XX internal errors.
 */
function isDataSqlState(code: string): boolean {
  return /^(21|22|23|54|2F|XX)/.test(code);
}

/** Prisma's codes (with driver adapters) for a server it cannot reach or a connection it lost. */
const prismaUnreachableCodes = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024']);
/** The kinds of @prisma/driver-adapter-utils' mapped errors that mean the same. */
const adapterUnreachableKinds = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout', 'TooManyConnections', 'DatabaseAccessDenied']);

const unreachableMessages =
  /connection terminated|connection timeout|timeout exceeded when trying to connect|connection refused|client has encountered a connection error|cannot use a pool after calling end|pglite is closed|database system is (starting up|shutting down|in recovery mode)|can't reach database server|server has closed the connection/i;

interface ErrorLike {
  code?: unknown;
  kind?: unknown;
  message?: unknown;
  cause?: unknown;
  errors?: unknown;
  /** Prisma's known request errors keep the adapter's error here. */
  meta?: { driverAdapterError?: unknown };
}

/** Classifies a database error from pg, PGlite or Prisma (over either adapter). */
export function classifyDatabaseError(error: unknown): DatabaseFailure {
  const seen = new Set<unknown>();
  let data = false;
  // Prisma and pg wrap the driver's error (cause, an AggregateError's errors): the innermost one says most.
  const visit = (value: unknown): boolean => {
    if (!value || typeof value !== 'object' || seen.has(value)) return false;
    seen.add(value);
    const candidate = value as ErrorLike;
    const code = typeof candidate.code === 'string' ? candidate.code : '';
    if (socketCodes.has(code) || prismaUnreachableCodes.has(code)) return true;
    if (typeof candidate.kind === 'string' && adapterUnreachableKinds.has(candidate.kind)) return true;
    if (/^[0-9A-Z]{5}$/.test(code)) {
      if (isTransientSqlState(code)) return true;
      if (isDataSqlState(code)) data = true;
    }
    if (typeof candidate.message === 'string' && unreachableMessages.test(candidate.message)) return true;
    if (Array.isArray(candidate.errors) && candidate.errors.some(visit)) return true;
    if (candidate.meta && typeof candidate.meta === 'object' && visit(candidate.meta.driverAdapterError)) return true;
    return visit(candidate.cause);
  };
  if (visit(error)) return 'unreachable';
  if (data) return 'data';
  // An error with no SQLSTATE anywhere did not come from the server's judgement of the SQL: most
  // likely the rows (a value the driver could not send). Splitting the batch finds out.
  const hasSqlState = [...seen].some((value) => typeof (value as ErrorLike).code === 'string' && /^[0-9A-Z]{5}$/.test((value as ErrorLike).code as string));
  return hasSqlState ? 'other' : 'data';
}

export function isDatabaseUnreachable(error: unknown): boolean {
  return classifyDatabaseError(error) === 'unreachable';
}
