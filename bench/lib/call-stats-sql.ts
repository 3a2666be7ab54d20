import { callStats, type CallStatsDimension } from '../../src/analytics/call-stats.ts';

/** The SQL and parameters callStats sends for `groupBy` (no filter), captured from the code itself. */
export async function callStatsSql(groupBy: readonly CallStatsDimension[]): Promise<{ sql: string; parameters: unknown[] }> {
  let captured: { sql: string; parameters: unknown[] } | undefined;
  const recorder = {
    query: async <Row,>(sql: string, parameters: unknown[] = []): Promise<Row[]> => {
      captured = { sql, parameters };
      return [];
    },
  };
  await callStats(recorder, null, groupBy);
  if (!captured) throw new Error('callStats sent no query');
  return captured;
}
