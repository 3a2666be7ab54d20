import { setTimeout as sleep } from 'node:timers/promises';
import { Counter, type Registry } from 'prom-client';
import type { Database, SqlSession } from '../db/database.ts';
import type { Logger } from '../logger.ts';

/*
 * The retention purge: deletes the calls older than [History] RETENTION_DAYS (with their bodies and
 * attempts) and the expired cache entries, in short statements of at most `batchSize` rows each, so
 * that no lock is held for long and the history writer's batches go on between them. One instance
 * at a time per database (a session advisory lock); the hours it empties are rolled up again (the
 * rollup's delete trigger marks them pending), so callStats agrees with the history that is kept.
 */

/** The advisory lock that keeps the purge to one instance at a time (beside the rollup's 212540172-3). */
export const purgeLock = 212540174;

/** The tables the purge deletes from, as `callboard_purged_rows_total{table}` names them. */
export type PurgedTable = 'LlmCall' | 'LlmCallBody' | 'LlmAttempt' | 'CacheEntry';

export interface PurgeOptions {
  /** Calls older than this many days go; null keeps them forever (expired cache entries go anyway). */
  retentionDays: number | null;
  /** Rows per statement. @default 1000 */
  batchSize?: number;
  /** Milliseconds between two statements: the writers' turn. @default 10 */
  pauseMs?: number;
  /** Tells the purge to stop after the statement running (the job stopping). */
  stopped?: () => boolean;
}

export interface PurgeResult {
  /** False when another instance (or another job of this process) held the lock: nothing was done. */
  ran: boolean;
  deleted: Record<PurgedTable, number>;
  /** DELETE statements sent. */
  statements: number;
}

/*
 * One batch of calls, oldest first ($1 the cut-off, $2 the batch size), deleted with their bodies and
 * attempts in one statement (the foreign keys cascade too; deleting them here counts them). The
 * (createdAt, id) index finds the batch without a scan.
 */
const purgeCallsSql = `
WITH doomed AS (
  SELECT c."id" FROM "LlmCall" c WHERE c."createdAt" < $1 ORDER BY c."createdAt", c."id" LIMIT $2
), bodies AS (
  DELETE FROM "LlmCallBody" b USING doomed d WHERE b."callId" = d."id" RETURNING 1
), attempts AS (
  DELETE FROM "LlmAttempt" a USING doomed d WHERE a."callId" = d."id" RETURNING 1
), calls AS (
  DELETE FROM "LlmCall" c USING doomed d WHERE c."id" = d."id" RETURNING 1
)
SELECT (SELECT count(*) FROM calls) AS "calls", (SELECT count(*) FROM bodies) AS "bodies", (SELECT count(*) FROM attempts) AS "attempts"`;

/** One batch of expired cache entries ($1 the batch size), by the "expiresAt" index. */
const purgeEntriesSql = `
WITH doomed AS (
  SELECT e."key" FROM "CacheEntry" e WHERE e."expiresAt" < now() ORDER BY e."expiresAt" LIMIT $1
), entries AS (
  DELETE FROM "CacheEntry" e USING doomed d WHERE e."key" = d."key" RETURNING 1
)
SELECT count(*) AS "entries" FROM entries`;

type PurgeDatabase = Pick<Database, 'withSession' | 'prisma'>;

// Two jobs of one process share a PGlite connection, on which an advisory lock is re-entrant: this
// set (of the database's one Prisma client, whatever wraps it) keeps them apart; the advisory lock
// keeps instances (processes) apart on Postgres.
const purging = new WeakSet<object>();

/** Purges once, batch after batch until nothing is left to delete (or `stopped`). */
export async function purgeHistory(database: PurgeDatabase, options: PurgeOptions): Promise<PurgeResult> {
  const batchSize = options.batchSize ?? 1000;
  const pauseMs = options.pauseMs ?? 10;
  const stopped = options.stopped ?? (() => false);
  const deleted: Record<PurgedTable, number> = { LlmCall: 0, LlmCallBody: 0, LlmAttempt: 0, CacheEntry: 0 };
  let statements = 0;
  if (purging.has(database.prisma)) return { ran: false, deleted, statements };
  purging.add(database.prisma);
  try {
    return await database.withSession(async (session: SqlSession) => {
      const [lock] = await session.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS "locked"', [purgeLock]);
      if (!lock!.locked) return { ran: false, deleted, statements };
      try {
        if (options.retentionDays !== null) {
          const cutOff = new Date(Date.now() - options.retentionDays * 86_400_000);
          for (;;) {
            if (stopped()) break;
            const [row] = await session.query<{ calls: string | number; bodies: string | number; attempts: string | number }>(purgeCallsSql, [cutOff, batchSize]);
            statements += 1;
            deleted.LlmCall += Number(row!.calls);
            deleted.LlmCallBody += Number(row!.bodies);
            deleted.LlmAttempt += Number(row!.attempts);
            if (Number(row!.calls) < batchSize) break;
            await sleep(pauseMs);
          }
        }
        for (;;) {
          if (stopped()) break;
          const [row] = await session.query<{ entries: string | number }>(purgeEntriesSql, [batchSize]);
          statements += 1;
          deleted.CacheEntry += Number(row!.entries);
          if (Number(row!.entries) < batchSize) break;
          await sleep(pauseMs);
        }
        return { ran: true, deleted, statements };
      } finally {
        await session.query('SELECT pg_advisory_unlock($1)', [purgeLock]);
      }
    });
  } finally {
    purging.delete(database.prisma);
  }
}

export interface PurgeMetrics {
  purgedRows: Counter<'table'>;
  runs: Counter<'result'>;
}

/** `callboard_purged_rows_total{table}` and `callboard_purge_runs_total{result}` on a registry (registered once). */
export function purgeMetrics(registry: Registry): PurgeMetrics {
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
  return {
    purgedRows:
      existing<Counter<'table'>>('callboard_purged_rows_total') ??
      new Counter({ name: 'callboard_purged_rows_total', help: 'Rows the retention purge deleted, by table.', labelNames: ['table'], registers: [registry] }),
    runs:
      existing<Counter<'result'>>('callboard_purge_runs_total') ??
      new Counter({
        name: 'callboard_purge_runs_total',
        help: 'Runs of the retention purge: ok, skipped (another instance held the lock) or error.',
        labelNames: ['result'],
        registers: [registry],
      }),
  };
}

export interface PurgeJob {
  /** Purges now (after the run in progress, if any). */
  run(): Promise<PurgeResult | null>;
  /** Stops the timer, and the run in progress after its current statement. */
  stop(): Promise<void>;
}

export interface PurgeJobOptions extends Omit<PurgeOptions, 'stopped'> {
  database: PurgeDatabase;
  logger: Pick<Logger, 'info' | 'warn'>;
  registry: Registry;
  /** Milliseconds between runs; 0 turns the job off. */
  intervalMs: number;
  /** The first run, in milliseconds. @default intervalMs (nothing is urgent about a purge: a restart loop never purges in a burst) */
  firstRunMs?: number;
}

/** Purges every `intervalMs` in the background (never on a call's path). */
export function startHistoryPurge(options: PurgeJobOptions): PurgeJob {
  const { database, logger, intervalMs } = options;
  const metrics = purgeMetrics(options.registry);
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<PurgeResult | null> | undefined;
  let stopped = intervalMs <= 0;
  // Only stop() cuts a run short: a job that is off (interval 0) still purges when run() is called.
  let stopping = false;
  let failing = false;
  const purge = async (): Promise<PurgeResult | null> => {
    try {
      const started = performance.now();
      const result = await purgeHistory(database, { ...options, stopped: () => stopping });
      metrics.runs.inc({ result: result.ran ? 'ok' : 'skipped' });
      for (const [table, count] of Object.entries(result.deleted)) if (count > 0) metrics.purgedRows.inc({ table }, count);
      if (failing) logger.info('history purge working again');
      failing = false;
      const total = Object.values(result.deleted).reduce((sum, count) => sum + count, 0);
      if (total > 0) logger.info({ deleted: result.deleted, statements: result.statements, ms: Math.round(performance.now() - started) }, 'history purged');
      return result;
    } catch (error) {
      metrics.runs.inc({ result: 'error' });
      // The database may be down: the next run catches up.
      if (!failing) logger.warn({ err: error }, 'history purge failed; it will be tried again');
      failing = true;
      return null;
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
  const job: PurgeJob = {
    async run() {
      while (running) await running;
      running = purge().finally(() => {
        running = undefined;
      });
      return running;
    },
    async stop() {
      stopped = true;
      stopping = true;
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
  schedule(options.firstRunMs ?? intervalMs);
  return job;
}
