import { rollUpCalls } from '../../src/analytics/call-rollup.ts';
import { callStats, type CallStatsBucket } from '../../src/analytics/call-stats.ts';
import { createDatabase } from '../../src/db/database.ts';

export interface RollupReport {
  seconds: number;
  steps: number;
  hourRows: number;
  dayRows: number;
  /** [MODEL, DAY] buckets compared. */
  buckets: number;
  /** Every count and sum of the rollup's answer equals the exact one (costs to 1e-9 relative). */
  sumsMatch: boolean;
  /** Relative error of the rollup's percentiles against percentile_cont over every call. */
  p50: { max: number; mean: number };
  p95: { max: number; mean: number };
}

/**
 * Builds the rollup of a history seeded without triggers (the seed runs as a replica, so it marks
 * no hour): forgets what the server's job rolled up before the seed, rolls everything up from this
 * process (waiting for the server's job if it holds the lock) and times it; then compares
 * callStats [MODEL, DAY] from the rollup with the exact query.
 */
export async function buildRollup(url: string): Promise<RollupReport> {
  const database = await createDatabase({ url, dataDir: 'unused', analyticsStatementTimeoutMs: 0 });
  try {
    await database.query('TRUNCATE "LlmCallRollup", "LlmCallRollupDay", "LlmCallRollupPending", "LlmCallRollupState"');
    const started = performance.now();
    const { steps } = await rollUpCalls(database, { wait: true });
    const seconds = (performance.now() - started) / 1000;
    await database.query('VACUUM ANALYZE "LlmCallRollup"');
    await database.query('VACUUM ANALYZE "LlmCallRollupDay"');
    const reader = { query: database.analyticsQuery };
    const rolled = await callStats(reader, null, ['MODEL', 'DAY']);
    const exact = await callStats(reader, null, ['MODEL', 'DAY'], { exact: true });
    // USD is exact: the rollup's sums equal the calls' to the picodollar.
    const close = (a: string | null, b: string | null) => a === b;
    const sums = (bucket: CallStatsBucket) => [bucket.model, bucket.day?.getTime(), bucket.calls, bucket.errors, bucket.cacheHits, bucket.cacheMisses, bucket.promptTokens, bucket.completionTokens, bucket.tokensSaved, bucket.latencyMaxMs];
    const sumsMatch =
      rolled.length === exact.length &&
      rolled.every((bucket, index) => JSON.stringify(sums(bucket)) === JSON.stringify(sums(exact[index]!)) && close(bucket.costUsd, exact[index]!.costUsd) && close(bucket.costSavedUsd, exact[index]!.costSavedUsd));
    const errors = (field: 'latencyP50Ms' | 'latencyP95Ms') => {
      const values = rolled.map((bucket, index) => Math.abs(bucket[field]! / exact[index]![field]! - 1));
      return { max: Math.max(...values), mean: values.reduce((sum, value) => sum + value, 0) / values.length };
    };
    return {
      seconds,
      steps: steps.length,
      hourRows: steps.reduce((sum, step) => sum + step.rows, 0),
      dayRows: Number((await database.query<{ count: string }>('SELECT count(*) AS "count" FROM "LlmCallRollupDay"'))[0]!.count),
      buckets: exact.length,
      sumsMatch,
      p50: errors('latencyP50Ms'),
      p95: errors('latencyP95Ms'),
    };
  } finally {
    await database.close();
  }
}
