import { collectDefaultMetrics, Counter, Gauge, type Registry } from 'prom-client';
import type { Database } from '../db/database.ts';
import type { HistoryStats, HistoryWriter } from '../llm/history.ts';

/**
 * The history writer's state, read when Prometheus scrapes (no timer): rows waiting in memory and in
 * the spool, the spool's bytes, the write lag, and its counts of rows written, failed writes and rows lost.
 */
export function registerHistoryMetrics(registry: Registry, history: Pick<HistoryWriter, 'stats'>): void {
  const registers = [registry];
  const gauge = (name: string, help: string, read: (stats: HistoryStats) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(history.stats()));
      },
    });
  // The writer keeps running totals: each scrape adds what was done since the last one.
  const counter = (name: string, help: string, read: (stats: HistoryStats) => number) => {
    let reported = 0;
    return new Counter({
      name,
      help,
      registers,
      collect() {
        const total = read(history.stats());
        if (total > reported) this.inc(total - reported);
        reported = total;
      },
    });
  };
  gauge('callboard_history_pending_rows', 'History rows (calls, cache entries and hits) in memory, not yet written.', (stats) => stats.memoryRows);
  gauge('callboard_history_spool_rows', 'History rows in the spool on local disk, not yet written.', (stats) => stats.spoolRows);
  gauge('callboard_history_spool_bytes', "Bytes of the spool's files on disk.", (stats) => stats.spoolBytes);
  gauge(
    'callboard_history_write_lag_seconds',
    'Age of the oldest history row not yet written (for the spool: how long it has held rows); 0 when none waits.',
    (stats) => stats.oldestPendingMs / 1000,
  );
  counter('callboard_history_rows_written_total', 'History rows the database took.', (stats) => stats.rowsWritten);
  counter('callboard_history_write_failures_total', 'History writes that failed and are retried (database down or refusing the batch).', (stats) => stats.writeFailures);
  counter('callboard_history_rows_dropped_total', 'History rows lost (refused even reduced, unreadable in the spool, or past the memory bound without a spool).', (stats) => stats.rowsDropped);
}

/** The Postgres pools' connections, read when Prometheus scrapes; PGlite has no pool and reports none. */
export function registerPoolMetrics(registry: Registry, database: Pick<Database, 'pools'>): void {
  const registers = [registry];
  const gauge = (name: string, help: string, read: (use: ReturnType<Database['pools']>[number]) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['pool'] as const,
      registers,
      collect() {
        for (const use of database.pools()) this.labels(use.pool).set(read(use));
      },
    });
  gauge('callboard_db_pool_connections', 'Connections open in the pool (main: calls and history; analytics: dashboard reads).', (use) => use.total);
  gauge('callboard_db_pool_idle_connections', 'Open connections of the pool that are idle.', (use) => use.idle);
  gauge('callboard_db_pool_waiting_requests', 'Queries waiting for a connection of the pool.', (use) => use.waiting);
}

/**
 * Node.js's process metrics (CPU, memory, heap, event loop lag, handles, GC) from prom-client. Its
 * event loop monitor samples on an unref'd timer (it never keeps the process alive): every 50 ms
 * rather than every 10, which cost about 4 ms of CPU a second on an idle server.
 */
export function registerProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 50 });
}
