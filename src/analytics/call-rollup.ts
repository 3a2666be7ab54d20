import type { Database } from '../db/database.ts';
import type { Logger } from '../logger.ts';

/**
 * The call history pre-aggregated for callStats: "LlmCallRollup" per UTC hour and combination of
 * tenant, API key, kind, API type, model, status, cache status and template, and "LlmCallRollupDay"
 * per UTC day, tenant, API key, kind and model, each row with the counts and sums callStats returns,
 * the longest latency and a sparse latency histogram. A background job (`startCallRollup`) writes
 * them for complete hours; nothing is written on a call's path.
 *
 * What keeps them true: triggers on "LlmCall" (see the call_rollup migration) mark the UTC hour of
 * every row inserted, updated or deleted in "LlmCallRollupPending", one statement per batch. The job
 * rolls up every complete hour from its watermark ("LlmCallRollupState"."rolledUntil") and rolls up
 * again every pending hour before it, removing their marks, in one statement. callStats reads the
 * rollup only for hours before the watermark that are not pending, and the calls themselves for the
 * rest, in one statement (one snapshot). A batch written late (the spool replayed hours after an
 * outage) marks its hours: they are read from the calls until the job has rolled them up again.
 * Writers hold a shared advisory lock from the moment they mark; the job takes it exclusively before
 * it reads the calls, so a batch either committed before the job read (and is in the rollup) or marks
 * its hours after the job committed (and is read from the calls).
 */

/** The advisory lock writers share (the call_rollup migration's triggers name the same number). */
export const rollupWritersLock = 212540172;
/** The advisory lock that keeps the job to one instance at a time. */
export const rollupJobLock = 212540173;

/** Successive latency buckets differ by this ratio: a bucket's geometric middle is within 1% of any latency in it. */
export const latencyBucketRatio = 1.02;
/** The bucket of latencies under a microsecond (read as 0). */
export const zeroLatencyBucket = -1_000_000;
const logRatio = Math.log(latencyBucketRatio);

/** The histogram bucket of a latency in milliseconds: bucket b holds [1.02^b, 1.02^(b+1)). */
export function latencyBucketSql(latency: string): string {
  return `(CASE WHEN ${latency} < 0.001 THEN ${zeroLatencyBucket} ELSE floor(ln(${latency}) / ${logRatio})::int END)`;
}

/** What a bucket reads as: its geometric middle, at most 0.995% from any latency in it. */
export function latencyBucketValue(bucket: number): number {
  return bucket === zeroLatencyBucket ? 0 : Math.exp((bucket + 0.5) * logRatio);
}

/**
 * The counts and sums callStats returns: how each is computed from calls aliased `c`, and how
 * stored ones merge. Spent tokens leave out cache hits, saved ones are the hits'; USD spent and saved
 * are the sums of "costUsd" (0 for a hit) and "costSavedUsd" (set on hits only), exact numerics.
 */
export const callMetrics = [
  { name: 'calls', fromCalls: `count(*)`, merge: 'sum' },
  { name: 'errors', fromCalls: `count(*) FILTER (WHERE c."status" = 'ERROR')`, merge: 'sum' },
  { name: 'cacheHits', fromCalls: `count(*) FILTER (WHERE c."cacheStatus" = 'HIT')`, merge: 'sum' },
  { name: 'cacheMisses', fromCalls: `count(*) FILTER (WHERE c."cacheStatus" = 'MISS')`, merge: 'sum' },
  { name: 'promptTokens', fromCalls: `coalesce(sum(c."promptTokens") FILTER (WHERE c."cacheStatus" <> 'HIT'), 0)`, merge: 'sum' },
  { name: 'completionTokens', fromCalls: `coalesce(sum(c."completionTokens") FILTER (WHERE c."cacheStatus" <> 'HIT'), 0)`, merge: 'sum' },
  { name: 'costUsd', fromCalls: `sum(c."costUsd")`, merge: 'sum' },
  { name: 'tokensSaved', fromCalls: `coalesce(sum(c."totalTokens") FILTER (WHERE c."cacheStatus" = 'HIT'), 0)`, merge: 'sum' },
  { name: 'costSavedUsd', fromCalls: `sum(c."costSavedUsd")`, merge: 'sum' },
  { name: 'latencyMaxMs', fromCalls: `max(c."latencyMs")`, merge: 'max' },
] as const;

/** `merge` of a stored metric, optionally over the rows of `filter` only. */
export function mergedMetric(metric: (typeof callMetrics)[number], source: string, filter = ''): string {
  return `${metric.merge}(${source}."${metric.name}")${filter ? ` FILTER (WHERE ${filter})` : ''}`;
}

/** Columns of the calls a rollup needs. */
export const rolledCallColumns = `c."createdAt", c."tenant", c."apiKeyId", c."kind", c."apiType", c."model", c."status", c."cacheStatus", c."templateName",
  c."latencyMs", c."promptTokens", c."completionTokens", c."totalTokens", c."costUsd", c."costSavedUsd"`;

const hourColumns = ['tenant', 'apiKeyId', 'kind', 'apiType', 'model', 'status', 'cacheStatus', 'templateName'];
/** The columns of the daily rollup beside its day; the CallStatsDimensions and filters it answers are those of these. */
export const dayColumns = ['tenant', 'apiKeyId', 'kind', 'model'];
const metricNames = callMetrics.map((metric) => `"${metric.name}"`).join(', ');
const quotedList = (columns: readonly string[], alias = '') => columns.map((column) => `${alias}"${column}"`).join(', ');
const utcHour = (column: string) => `(date_trunc('hour', ${column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`;
export const utcDay = (column: string) => `(date_trunc('day', ${column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`;

/**
 * One step of the job, one statement: rolls up the calls of [$1, $2) and of the pending hours
 * before $1 (again), removes the marks of every hour before $2, rebuilds the days those hours are
 * in from their hourly rows, and moves the watermark to $2.
 */
const rollupStepSql = `
WITH cleared AS (
  DELETE FROM "LlmCallRollupPending" WHERE "hour" < $2 RETURNING "hour"
), redo AS (
  SELECT "hour" FROM cleared WHERE "hour" < $1
), calls AS (
  SELECT ${rolledCallColumns} FROM "LlmCall" c WHERE c."createdAt" >= $1 AND c."createdAt" < $2
  UNION ALL
  SELECT ${rolledCallColumns} FROM redo JOIN "LlmCall" c ON c."createdAt" >= redo."hour" AND c."createdAt" < redo."hour" + interval '1 hour'
), buckets AS (
  SELECT ${utcHour('c."createdAt"')} AS "hour", ${quotedList(hourColumns, 'c.')}, ${latencyBucketSql('c."latencyMs"')} AS "bucket", count(*) AS "n",
    ${callMetrics.map((metric) => `${metric.fromCalls} AS "${metric.name}"`).join(', ')}
  FROM calls c GROUP BY 1, ${hourColumns.map((_column, index) => index + 2).join(', ')}, "bucket"
), fresh AS (
  SELECT b."hour", ${quotedList(hourColumns, 'b.')}, ${callMetrics.map((metric) => `${mergedMetric(metric, 'b')} AS "${metric.name}"`).join(', ')},
    array_agg(b."bucket" ORDER BY b."bucket") AS "latencyBuckets", array_agg(b."n" ORDER BY b."bucket") AS "latencyCounts"
  FROM buckets b GROUP BY b."hour", ${quotedList(hourColumns, 'b.')}
), removed AS (
  DELETE FROM "LlmCallRollup" r WHERE (r."hour" >= $1 AND r."hour" < $2) OR r."hour" IN (SELECT "hour" FROM redo) RETURNING 1
), inserted AS (
  INSERT INTO "LlmCallRollup" ("hour", ${quotedList(hourColumns)}, ${metricNames}, "latencyBuckets", "latencyCounts")
  SELECT "hour", ${quotedList(hourColumns)}, ${metricNames}, "latencyBuckets", "latencyCounts" FROM fresh RETURNING 1
), touched AS (
  SELECT DISTINCT ${utcDay('h."hour"')} AS "day" FROM (SELECT "hour" FROM redo UNION ALL SELECT "hour" FROM fresh) h
), day_hours AS (
  SELECT "hour", ${quotedList(dayColumns)}, ${metricNames}, "latencyBuckets", "latencyCounts" FROM fresh
  UNION ALL
  SELECT r."hour", ${quotedList(dayColumns, 'r.')}, ${quotedList(callMetrics.map((metric) => metric.name), 'r.')}, r."latencyBuckets", r."latencyCounts"
  FROM touched t JOIN "LlmCallRollup" r ON r."hour" >= t."day" AND r."hour" < t."day" + interval '1 day'
  WHERE NOT (r."hour" >= $1 AND r."hour" < $2) AND r."hour" NOT IN (SELECT "hour" FROM redo)
), day_buckets AS (
  SELECT ${utcDay('h."hour"')} AS "day", ${quotedList(dayColumns, 'h.')}, u."bucket", sum(u."n") AS "n",
    ${callMetrics.map((metric) => `${mergedMetric(metric, 'h', 'u."index" = 1')} AS "${metric.name}"`).join(', ')}
  FROM day_hours h CROSS JOIN LATERAL unnest(h."latencyBuckets", h."latencyCounts") WITH ORDINALITY AS u("bucket", "n", "index")
  GROUP BY 1, ${quotedList(dayColumns, 'h.')}, u."bucket"
), day_fresh AS (
  SELECT b."day", ${quotedList(dayColumns, 'b.')}, ${callMetrics.map((metric) => `${mergedMetric(metric, 'b')} AS "${metric.name}"`).join(', ')},
    array_agg(b."bucket" ORDER BY b."bucket") AS "latencyBuckets", array_agg(b."n" ORDER BY b."bucket") AS "latencyCounts"
  FROM day_buckets b GROUP BY b."day", ${quotedList(dayColumns, 'b.')}
), days_removed AS (
  DELETE FROM "LlmCallRollupDay" d WHERE d."day" IN (SELECT "day" FROM touched) RETURNING 1
), days_inserted AS (
  INSERT INTO "LlmCallRollupDay" ("day", ${quotedList(dayColumns)}, ${metricNames}, "latencyBuckets", "latencyCounts")
  SELECT "day", ${quotedList(dayColumns)}, ${metricNames}, "latencyBuckets", "latencyCounts" FROM day_fresh RETURNING 1
), moved AS (
  INSERT INTO "LlmCallRollupState" ("id", "rolledUntil") VALUES (1, $2) ON CONFLICT ("id") DO UPDATE SET "rolledUntil" = excluded."rolledUntil" RETURNING 1
)
SELECT (SELECT count(*) FROM redo) AS "redone", (SELECT count(*) FROM inserted) AS "rows", (SELECT count(*) FROM days_inserted) AS "dayRows"`;

/** Where the job stands, read before a step. */
const positionSql = `
SELECT s."rolledUntil", ${utcHour('now()')} AS "currentHour",
  (SELECT ${utcHour('min(c."createdAt")')} FROM "LlmCall" c) AS "firstHour",
  (SELECT min(p."hour") FROM "LlmCallRollupPending" p) AS "firstPending"
FROM (SELECT (SELECT "rolledUntil" FROM "LlmCallRollupState" WHERE "id" = 1) AS "rolledUntil") s`;

export interface RollupStep {
  /** The hours rolled up for the first time: [from, until). */
  from: Date;
  until: Date;
  /** Pending hours before `from` rolled up again. */
  redone: number;
  rows: number;
  dayRows: number;
}

export interface RollupOptions {
  /** Hours rolled up for the first time per step (one transaction), so that writers never wait long. @default 24 */
  hoursPerStep?: number;
  /** Wait for another instance's step instead of leaving the work to it. @default false */
  wait?: boolean;
}

type RollupDatabase = Pick<Database, 'kind' | 'query' | 'withSession'>;

/**
 * One step of the rollup, in a transaction that holds the job's lock and, exclusively, the
 * writers' lock. Null when there was nothing to do, or another instance holds the job's lock.
 */
export async function rollUpStep(database: RollupDatabase, options: RollupOptions = {}): Promise<RollupStep | null> {
  const hoursPerStep = options.hoursPerStep ?? 24;
  const step = async (query: RollupDatabase['query']): Promise<RollupStep | null> => {
    const [position] = await query<{ rolledUntil: Date | null; currentHour: Date; firstHour: Date | null; firstPending: Date | null }>(positionSql);
    const { rolledUntil, currentHour, firstHour, firstPending } = position!;
    const from = rolledUntil ?? firstHour ?? currentHour;
    const until = new Date(Math.max(from.getTime(), Math.min(currentHour.getTime(), from.getTime() + hoursPerStep * 3_600_000)));
    const pendingBefore = firstPending !== null && firstPending.getTime() < until.getTime();
    if (until.getTime() === from.getTime() && !pendingBefore && rolledUntil !== null) return null;
    const [result] = await query<{ redone: string | number; rows: string | number; dayRows: string | number }>(rollupStepSql, [from, until]);
    return { from, until, redone: Number(result!.redone), rows: Number(result!.rows), dayRows: Number(result!.dayRows) };
  };
  // PGlite runs one statement at a time on its one connection: the step's statement is atomic alone,
  // and a BEGIN would take in whatever the history writer sends meanwhile.
  if (database.kind === 'pglite') return step(database.query);
  return database.withSession(async (session) => {
    await session.query('BEGIN');
    try {
      const [lock] = await session.query<{ locked: boolean }>(
        options.wait ? `SELECT pg_advisory_xact_lock($1) IS NOT NULL AS "locked"` : `SELECT pg_try_advisory_xact_lock($1) AS "locked"`,
        [rollupJobLock],
      );
      if (!lock!.locked) {
        await session.query('ROLLBACK');
        return null;
      }
      // Batches being written finish first; those that come next wait for this step (a few hundred ms at most).
      await session.query('SELECT pg_advisory_xact_lock($1)', [rollupWritersLock]);
      const result = await step(session.query);
      await session.query('COMMIT');
      return result;
    } catch (error) {
      await session.query('ROLLBACK').catch(() => {});
      throw error;
    }
  });
}

/** Steps until every complete hour is rolled up (or another instance does it). */
export async function rollUpCalls(database: RollupDatabase, options: RollupOptions = {}): Promise<{ steps: RollupStep[] }> {
  const steps: RollupStep[] = [];
  for (let step = await rollUpStep(database, options); step; step = await rollUpStep(database, options)) {
    steps.push(step);
    if (step.until.getTime() === step.from.getTime()) break;
  }
  return { steps };
}

export interface CallRollupJob {
  /** Runs a rollup now (after the one running, if any). */
  run(): Promise<void>;
  /** Stops the timer and waits for a step running. */
  stop(): Promise<void>;
}

/** Rolls up complete hours every `intervalMs` (and soon after start); 0 turns the job off. */
export function startCallRollup(options: { database: RollupDatabase; logger: Logger; intervalMs: number; firstRunMs?: number }): CallRollupJob {
  const { database, logger, intervalMs } = options;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = intervalMs <= 0;
  let failing = false;
  const run = async () => {
    try {
      const started = performance.now();
      const { steps } = await rollUpCalls(database);
      if (failing) logger.info('call rollup working again');
      failing = false;
      const rows = steps.reduce((sum, step) => sum + step.rows, 0);
      if (steps.length > 1) logger.info({ steps: steps.length, rows, ms: Math.round(performance.now() - started) }, 'call history rolled up');
    } catch (error) {
      // The database may be down: callStats reads the calls meanwhile, and the next run catches up.
      if (!failing) logger.warn({ err: error }, 'call rollup failed; it will be tried again');
      failing = true;
    }
  };
  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      timer = undefined;
      void job.run().finally(() => schedule(intervalMs));
    }, delayMs);
    timer.unref();
  };
  const job: CallRollupJob = {
    async run() {
      while (running) await running;
      running = run().finally(() => {
        running = undefined;
      });
      await running;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
  schedule(options.firstRunMs ?? Math.min(intervalMs, 1000));
  return job;
}
