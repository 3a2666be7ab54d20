import { CallboardError } from '../errors.ts';
import type { Database } from '../db/database.ts';
import { compareUsd, formatPicoUsd, picoUsdOf, usdOrNull, type Usd } from '../money.ts';

/** An API key's limits; null: none. */
export interface KeyLimits {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
  /** USD, exact decimal strings. */
  usdPerDay: Usd | null;
  usdPerMonth: Usd | null;
}

export const noLimits: KeyLimits = { requestsPerMinute: null, tokensPerMinute: null, usdPerDay: null, usdPerMonth: null };

export interface Spend {
  requests: number;
  tokens: number;
  usd: Usd;
}

/** What `reserve` counted against a key, to be settled or released once the call is over. */
export interface Reservation {
  apiKeyId: string;
  reserved: Spend;
  /** The UTC day (YYYY-MM-DD) and month (YYYY-MM) the reserved USD was counted in. */
  day: string;
  month: string;
  /** The limits in force at reservation time: settling adjusts exactly the counters reserving touched. */
  limits: KeyLimits;
}

export interface KeyUsage {
  requestsThisMinute: number;
  tokensThisMinute: number;
  usdToday: Usd;
  usdThisMonth: Usd;
}

export interface LimitStore {
  /**
   * Reserves `spend` against every limit of the key in one statement, or reserves nothing and throws
   * RATE_LIMITED (details.retryAfterSeconds) or BUDGET_EXCEEDED (details.limit, maximum, used, requested).
   * Resolves to null without a round trip when the key has no limit. Once refused for its requests per
   * minute, a key is refused again from memory until its bucket has room: code that ever lowers a
   * stored "requestsTat" (a usage reset) must know other instances may keep refusing until then.
   */
  reserve(apiKeyId: string, limits: KeyLimits, spend: Spend): Promise<Reservation | null>;
  /** Replaces the reserved tokens and USD by what the call really spent; its request stays counted. */
  settle(reservation: Reservation | null, actual: { tokens: number; usd: Usd }): Promise<void>;
  /** Gives the reserved tokens and USD back (the call failed); its request stays counted. */
  release(reservation: Reservation | null): Promise<void>;
  /**
   * Current usage of each key, zeros for a key never used. Rate usage is kept only while a rate limit
   * is set, and is read against `limits` when given, else against the key's stored limits.
   */
  usage(apiKeyIds: readonly string[], limits?: ReadonlyMap<string, KeyLimits>): Promise<Map<string, KeyUsage>>;
}

export interface LimitStoreOptions {
  database: Pick<Database, 'query'>;
  /** Milliseconds since the epoch. @default Date.now */
  now?: () => number;
  /**
   * Whether a counter update waits for its WAL flush (the server's synchronous_commit). Off, a
   * reservation costs a third on a single connection and a hot key's row lock is held for no fsync;
   * a crash of the Postgres server (not of Callboard) may then forget the last ~0.6 s of updates
   * (3 x wal_writer_delay), never leave them half done. The call history stays the durable ledger.
   * @default false
   */
  waitForWalFlush?: boolean;
}

const WINDOW_MS = 60_000;
// Adding an emission interval to a tat near 1.7e12 ms rounds by about 0.0002 ms in float8: a
// millisecond of slack keeps a full burst (10 of 10) whole, and lets through at most a millisecond early.
const TAT_TOLERANCE_MS = 1;

// set_config(..., true) lasts until the end of the statement's own transaction: it decides how this
// one commit waits, and nothing else on the pooled connection.
const ASYNCHRONOUS_COMMIT = `(SELECT set_config('synchronous_commit', 'off', true)) AS commit_settings`;
const SERVER_COMMIT = `(SELECT 1) AS commit_settings`;

// USD is numeric (exact) in the table and in the parameters: sums such as 16 x 0.3 never drift over a budget.
const keptDayUsd = `(CASE WHEN u."day" >= $3::text THEN u."dayUsd" ELSE 0 END)`;
const keptMonthUsd = `(CASE WHEN u."month" >= $4::text THEN u."monthUsd" ELSE 0 END)`;

const TAT_CEILING = WINDOW_MS + TAT_TOLERANCE_MS;

/*
 * The reservation, shared by both statements below. `u` is the key's current row; the parameters:
 * $1 key, $2 now (ms), $3 day, $4 month, $5 request emission interval (ms; null: not limited),
 * $6 requests, $7 token emission interval, $8 tokens, $9 USD (null: no USD budget), $10 USD per day,
 * $11 USD per month. A day or month only moves forward (greatest), so an instance whose clock lags
 * cannot reset a new day's spend back to its own.
 */
const fits = {
  requests: `($5::float8 IS NULL OR greatest(u."requestsTat", $2::float8) + $6::float8 * $5::float8 - $2::float8 <= ${TAT_CEILING})`,
  tokens: `($7::float8 IS NULL OR greatest(u."tokensTat", $2::float8) + $8::float8 * $7::float8 - $2::float8 <= ${TAT_CEILING})`,
  day: `($10::numeric IS NULL OR ${keptDayUsd} + $9::numeric <= $10::numeric)`,
  month: `($11::numeric IS NULL OR ${keptMonthUsd} + $9::numeric <= $11::numeric)`,
};
const RESERVED_VALUES = `
  "requestsTat" = coalesce(greatest(u."requestsTat", $2::float8) + $6::float8 * $5::float8, u."requestsTat"),
  "tokensTat" = coalesce(greatest(u."tokensTat", $2::float8) + $8::float8 * $7::float8, u."tokensTat"),
  "day" = CASE WHEN $9::numeric IS NULL THEN u."day" ELSE greatest(u."day", $3::text) END,
  "dayUsd" = coalesce(${keptDayUsd} + $9::numeric, u."dayUsd"),
  "month" = CASE WHEN $9::numeric IS NULL THEN u."month" ELSE greatest(u."month", $4::text) END,
  "monthUsd" = coalesce(${keptMonthUsd} + $9::numeric, u."monthUsd")`;
const ALL_FIT = `${fits.requests} AND ${fits.tokens} AND ${fits.day} AND ${fits.month}`;

/*
 * The hot path, one statement whatever the state: the upsert creates the row on a key's first call,
 * and otherwise updates it only when every limit still holds with this spend. Concurrent statements
 * on one key queue on its row lock and each re-evaluates the WHERE on the newest row version (READ
 * COMMITTED), so reservations from any number of connections and instances are exact.
 * `commitSettings` is a one-row FROM item that may set how the commit waits.
 */
const reserveSql = (commitSettings: string) => `
INSERT INTO "ApiKeyUsage" AS u ("apiKeyId", "requestsTat", "tokensTat", "day", "dayUsd", "month", "monthUsd")
SELECT
  $1::uuid,
  coalesce($2::float8 + $6::float8 * $5::float8, 0),
  coalesce($2::float8 + $8::float8 * $7::float8, 0),
  CASE WHEN $9::numeric IS NULL THEN '' ELSE $3::text END,
  coalesce($9::numeric, 0),
  CASE WHEN $9::numeric IS NULL THEN '' ELSE $4::text END,
  coalesce($9::numeric, 0)
FROM ${commitSettings}
WHERE true
ON CONFLICT ("apiKeyId") DO UPDATE SET ${RESERVED_VALUES}
WHERE ${ALL_FIT}
RETURNING "day", "month"`;

/*
 * After a refusal: the row is read under its lock (FOR UPDATE returns the newest version), so the
 * reason given is the state the decision was made on, and a settle that made room in between lets
 * this same statement reserve. Either way no third round trip and no retry loop. The lock alone
 * writes WAL, so the commit settings sit in the outer query, which runs whether or not it reserves.
 */
const reserveLockedSql = (commitSettings: string) => `
WITH u AS (
  SELECT "apiKeyId", "requestsTat", "tokensTat", "day", "dayUsd", "month", "monthUsd"
  FROM "ApiKeyUsage" WHERE "apiKeyId" = $1::uuid FOR UPDATE
), reserved AS (
  UPDATE "ApiKeyUsage" AS target SET ${RESERVED_VALUES}
  FROM u
  WHERE target."apiKeyId" = u."apiKeyId" AND ${ALL_FIT}
  RETURNING target."day", target."month"
)
SELECT u."requestsTat", u."tokensTat", u."day", u."dayUsd", u."month", u."monthUsd",
       reserved."day" AS "reservedDay", reserved."month" AS "reservedMonth",
       ${fits.requests} AS "requestsFit", ${fits.tokens} AS "tokensFit", ${fits.day} AS "dayFits", ${fits.month} AS "monthFits"
FROM u LEFT JOIN reserved ON true CROSS JOIN ${commitSettings}`;

/*
 * $1 key, $2 now, $3 token emission interval (null: not limited), $4 tokens spent minus reserved,
 * $5 USD spent minus reserved (null: no USD budget), $6 and $7 the reservation's day and month: once
 * a new day or month has reset the spend, the old window's reservation is no longer in it to adjust.
 */
const settleSql = (commitSettings: string) => `
UPDATE "ApiKeyUsage" SET
  "tokensTat" = coalesce(greatest(greatest("tokensTat", $2::float8) + $4::float8 * $3::float8, 0), "tokensTat"),
  "dayUsd" = CASE WHEN $5::numeric IS NOT NULL AND "day" = $6::text THEN greatest("dayUsd" + $5::numeric, 0) ELSE "dayUsd" END,
  "monthUsd" = CASE WHEN $5::numeric IS NOT NULL AND "month" = $7::text THEN greatest("monthUsd" + $5::numeric, 0) ELSE "monthUsd" END
FROM ${commitSettings}
WHERE "apiKeyId" = $1::uuid`;

const USAGE_SQL = `
SELECT k."id", k."requestsPerMinute", k."tokensPerMinute",
       u."requestsTat", u."tokensTat", u."day", u."dayUsd", u."month", u."monthUsd"
FROM "ApiKey" k LEFT JOIN "ApiKeyUsage" u ON u."apiKeyId" = k."id"
WHERE k."id" = ANY($1::uuid[])`;

interface UsageRow {
  requestsTat: number;
  tokensTat: number;
  day: string;
  /** numeric, as text. */
  dayUsd: string;
  month: string;
  monthUsd: string;
}

interface LockedRow extends UsageRow {
  reservedDay: string | null;
  reservedMonth: string | null;
  requestsFit: boolean;
  tokensFit: boolean;
  dayFits: boolean;
  monthFits: boolean;
}

/**
 * Per-key rate limits (GCRA: a sliding bucket whose burst is the per-minute limit) and USD budgets
 * per UTC day and month, held in "ApiKeyUsage" so that every instance on the database shares them.
 */
export function createLimitStore(options: LimitStoreOptions): LimitStore {
  const { database } = options;
  const now = options.now ?? Date.now;
  const commitSettings = options.waitForWalFlush ? SERVER_COMMIT : ASYNCHRONOUS_COMMIT;
  const reserveStatement = reserveSql(commitSettings);
  const reserveLockedStatement = reserveLockedSql(commitSettings);
  const settleStatement = settleSql(commitSettings);
  // A reservation settles once: a settle followed by a release in a `finally` must not give back twice.
  const settled = new WeakSet<Reservation>();
  // A request tat only grows (settling never gives requests back), so once a key is refused for its
  // requests per minute, this instance can refuse it again without asking, exactly, until the tat
  // read then has drained: a client hammering a limited key costs the database nothing.
  const requestsRefused = new Map<string, { requestsPerMinute: number; tat: number }>();

  async function reserve(apiKeyId: string, limits: KeyLimits, spend: Spend): Promise<Reservation | null> {
    if (!hasAnyLimit(limits)) return null;
    const cost = { requests: checkedAmount('requests', spend.requests), tokens: checkedAmount('tokens', spend.tokens), usd: checkedUsd(spend.usd) };
    rejectWhatNeverFits(limits, cost);
    const requestsInterval = emissionInterval(limits.requestsPerMinute);
    const tokensInterval = emissionInterval(limits.tokensPerMinute);
    const tracksUsd = tracksUsdOf(limits);
    const time = now();
    const refused = requestsRefused.get(apiKeyId);
    if (refused && requestsInterval !== null && cost.requests > 0) {
      if (refused.requestsPerMinute === limits.requestsPerMinute && Math.max(refused.tat, time) + cost.requests * requestsInterval - time > TAT_CEILING) {
        throw rateLimited('requestsPerMinute', limits, refused.tat, cost.requests, time);
      }
      requestsRefused.delete(apiKeyId);
    }
    const parameters = [
      apiKeyId,
      time,
      utcDay(time),
      utcMonth(time),
      requestsInterval,
      requestsInterval === null ? 0 : cost.requests,
      tokensInterval,
      tokensInterval === null ? 0 : cost.tokens,
      tracksUsd ? cost.usd : null,
      limits.usdPerDay,
      limits.usdPerMonth,
    ];
    const reservation = (row: { day: string; month: string }): Reservation => ({ apiKeyId, reserved: cost, day: row.day, month: row.month, limits: { ...limits } });
    const [reserved] = await queryForKey<{ day: string; month: string }>(apiKeyId, reserveStatement, parameters);
    if (reserved) return reservation(reserved);
    const [locked] = await database.query<LockedRow>(reserveLockedStatement, parameters);
    // The key was deleted between the two statements.
    if (!locked) throw new CallboardError('NOT_FOUND', 'No such API key.', { details: { apiKeyId } });
    if (locked.reservedDay !== null && locked.reservedMonth !== null) return reservation({ day: locked.reservedDay, month: locked.reservedMonth });
    if (!locked.requestsFit && limits.requestsPerMinute !== null) {
      // A bound on the memory a flood of distinct refused keys can take; forgetting only costs round trips.
      if (requestsRefused.size >= 10_000) requestsRefused.clear();
      requestsRefused.set(apiKeyId, { requestsPerMinute: limits.requestsPerMinute, tat: locked.requestsTat });
    }
    throw rejectionFor(locked, limits, cost, time);
  }

  async function settle(reservation: Reservation | null, actual: { tokens: number; usd: Usd }): Promise<void> {
    if (!reservation || settled.has(reservation)) return;
    const tokensInterval = emissionInterval(reservation.limits.tokensPerMinute);
    const tracksUsd = tracksUsdOf(reservation.limits);
    const tokensDelta = tokensInterval === null ? 0 : checkedAmount('tokens', actual.tokens) - reservation.reserved.tokens;
    const usdDelta = tracksUsd ? picoUsdOf(checkedUsd(actual.usd)) - picoUsdOf(reservation.reserved.usd) : 0n;
    settled.add(reservation);
    if (tokensDelta === 0 && usdDelta === 0n) return;
    try {
      await database.query(settleStatement, [
        reservation.apiKeyId,
        now(),
        tokensInterval,
        tokensDelta,
        tracksUsd ? formatPicoUsd(usdDelta) : null,
        reservation.day,
        reservation.month,
      ]);
    } catch (error) {
      settled.delete(reservation);
      throw error;
    }
  }

  async function usage(apiKeyIds: readonly string[], limits?: ReadonlyMap<string, KeyLimits>): Promise<Map<string, KeyUsage>> {
    const result = new Map<string, KeyUsage>(apiKeyIds.map((id) => [id, { requestsThisMinute: 0, tokensThisMinute: 0, usdToday: '0', usdThisMonth: '0' }]));
    if (apiKeyIds.length === 0) return result;
    const rows = await database.query<Partial<UsageRow> & { id: string; requestsPerMinute: number | null; tokensPerMinute: number | null }>(USAGE_SQL, [
      [...new Set(apiKeyIds)],
    ]);
    const time = now();
    for (const row of rows) {
      const keyLimits = limits?.get(row.id) ?? row;
      result.set(row.id, {
        requestsThisMinute: bucketLevel(row.requestsTat, emissionInterval(keyLimits.requestsPerMinute), time),
        tokensThisMinute: bucketLevel(row.tokensTat, emissionInterval(keyLimits.tokensPerMinute), time),
        usdToday: row.day !== undefined && row.day !== null && row.day >= utcDay(time) ? (usdOrNull(row.dayUsd) ?? '0') : '0',
        usdThisMonth: row.month !== undefined && row.month !== null && row.month >= utcMonth(time) ? (usdOrNull(row.monthUsd) ?? '0') : '0',
      });
    }
    return result;
  }

  async function queryForKey<Row>(apiKeyId: string, sql: string, parameters: unknown[]): Promise<Row[]> {
    try {
      return await database.query<Row>(sql, parameters);
    } catch (error) {
      if (isForeignKeyViolation(error)) throw new CallboardError('NOT_FOUND', 'No such API key.', { details: { apiKeyId }, cause: error });
      throw error;
    }
  }

  return { reserve, settle, release: (reservation) => settle(reservation, { tokens: 0, usd: '0' }), usage };
}

/** Whether a key has any limit at all: one without costs no round trip and no estimate. */
export function hasAnyLimit(limits: KeyLimits): boolean {
  return limits.requestsPerMinute !== null || limits.tokensPerMinute !== null || limits.usdPerDay !== null || limits.usdPerMonth !== null;
}

function tracksUsdOf(limits: KeyLimits): boolean {
  return limits.usdPerDay !== null || limits.usdPerMonth !== null;
}

/** Milliseconds one unit adds to the bucket; null when the limit is off, or zero (nothing can ever pass then). */
function emissionInterval(perMinute: number | null): number | null {
  return perMinute !== null && perMinute > 0 ? WINDOW_MS / perMinute : null;
}

function checkedUsd(value: Usd): Usd {
  if (compareUsd(value, '0') < 0) throw new RangeError(`usd must be >= 0, got ${value}`);
  return value;
}

function checkedAmount(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  return value;
}

/** A call bigger than a whole window would wait forever: it is refused at once, without a retry time. */
function rejectWhatNeverFits(limits: KeyLimits, cost: Spend): void {
  const rates = [
    ['requestsPerMinute', cost.requests, 'requests'],
    ['tokensPerMinute', cost.tokens, 'tokens'],
  ] as const;
  for (const [limit, requested, unit] of rates) {
    const maximum = limits[limit];
    if (maximum !== null && requested > maximum) {
      throw new CallboardError('RATE_LIMITED', `This call alone needs ${requested} ${unit}, more than the API key's limit of ${maximum} ${unit} per minute; it can never pass.`, {
        details: { limit, maximum, requested, callExceedsLimit: true },
      });
    }
  }
  const budgets = [
    ['usdPerDay', 'day'],
    ['usdPerMonth', 'month'],
  ] as const;
  for (const [limit, period] of budgets) {
    const maximum = limits[limit];
    if (maximum !== null && compareUsd(cost.usd, maximum) > 0) {
      throw new CallboardError('BUDGET_EXCEEDED', `This call alone may cost ${formatUsd(cost.usd)}, more than the API key's budget of ${formatUsd(maximum)} per ${period}.`, {
        details: { limit, maximum, used: '0', requested: cost.usd, callExceedsLimit: true },
      });
    }
  }
}

/**
 * Why a reservation was refused, from the row it was refused on and the verdict of each limit: a
 * budget first (no retry within seconds helps), else the rate limit with the longest wait.
 */
function rejectionFor(row: LockedRow, limits: KeyLimits, cost: Spend, time: number): CallboardError {
  const budgets = [
    ['usdPerMonth', row.monthFits, row.month >= utcMonth(time) ? usdOrNull(row.monthUsd)! : '0', 'month', startOfNextUtcMonth(time)],
    ['usdPerDay', row.dayFits, row.day >= utcDay(time) ? usdOrNull(row.dayUsd)! : '0', 'day', startOfNextUtcDay(time)],
  ] as const;
  for (const [limit, fit, used, period, resetsAt] of budgets) {
    const maximum = limits[limit];
    if (fit || maximum === null) continue;
    return new CallboardError(
      'BUDGET_EXCEEDED',
      `The API key's budget of ${formatUsd(maximum)} per ${period} is spent: ${formatUsd(used)} used, and this call may cost ${formatUsd(cost.usd)}.`,
      { details: { limit, maximum, used, requested: cost.usd, retryAfterSeconds: Math.max(1, Math.ceil((resetsAt - time) / 1000)) } },
    );
  }
  const rates = [
    ['requestsPerMinute', row.requestsFit, row.requestsTat, cost.requests],
    ['tokensPerMinute', row.tokensFit, row.tokensTat, cost.tokens],
  ] as const;
  let rejection: CallboardError | undefined;
  for (const [limit, fit, tat, requested] of rates) {
    if (fit || emissionInterval(limits[limit]) === null) continue;
    const candidate = rateLimited(limit, limits, tat, requested, time);
    if (!rejection || (candidate.details.retryAfterSeconds as number) > (rejection.details.retryAfterSeconds as number)) rejection = candidate;
  }
  if (!rejection) throw new Error('A reservation was refused while every limit had room');
  return rejection;
}

function rateLimited(limit: 'requestsPerMinute' | 'tokensPerMinute', limits: KeyLimits, tat: number, requested: number, time: number): CallboardError {
  const maximum = limits[limit]!;
  const interval = WINDOW_MS / maximum;
  const unit = limit === 'requestsPerMinute' ? 'requests' : 'tokens';
  const retryAfterSeconds = Math.max(1, Math.ceil((Math.max(tat, time) + requested * interval - time - WINDOW_MS) / 1000));
  return new CallboardError('RATE_LIMITED', `The API key's limit of ${maximum} ${unit} per minute is reached; retry in ${retryAfterSeconds} s.`, {
    details: { limit, maximum, used: bucketLevel(tat, interval, time), requested, retryAfterSeconds },
  });
}

/** The units a GCRA bucket holds now: what the sliding minute has counted and not yet drained. */
function bucketLevel(tat: number | null | undefined, interval: number | null, time: number): number {
  if (interval === null || tat === null || tat === undefined) return 0;
  // Rounded before the ceiling so that float8 noise (9.0000000001) does not count one more.
  return Math.ceil(Number((Math.max(0, tat - time) / interval).toFixed(6)));
}

function formatUsd(value: Usd): string {
  return `$${value}`;
}

export function utcDay(time: number): string {
  return new Date(time).toISOString().slice(0, 10);
}

export function utcMonth(time: number): string {
  return new Date(time).toISOString().slice(0, 7);
}

function startOfNextUtcDay(time: number): number {
  const date = new Date(time);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() + 1);
}

function startOfNextUtcMonth(time: number): number {
  const date = new Date(time);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
}

function isForeignKeyViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23503';
}
