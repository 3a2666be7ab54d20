import { callStats, type CallStatsDimension } from '../../src/analytics/call-stats.ts';
import type { PrismaClient } from '../../src/db/generated/client.ts';

/** The SQL and parameters callStats sends for `groupBy` (no filter), captured from the code itself. */
export async function callStatsSql(groupBy: readonly CallStatsDimension[]): Promise<{ sql: string; parameters: unknown[] }> {
  let captured: { sql: string; parameters: unknown[] } | undefined;
  const recorder = {
    $queryRawUnsafe: async (sql: string, ...parameters: unknown[]) => {
      captured = { sql, parameters };
      return [];
    },
  };
  await callStats(recorder as unknown as PrismaClient, null, groupBy);
  if (!captured) throw new Error('callStats sent no query');
  return captured;
}
