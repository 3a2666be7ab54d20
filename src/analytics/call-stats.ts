import type { PrismaClient } from '../db/generated/client.ts';
import { badUserInput } from '../errors.ts';
import { callWhere, type CallFilter } from './calls.ts';

export type CallStatsDimension = 'MODEL' | 'API_TYPE' | 'KIND' | 'STATUS' | 'CACHE_STATUS' | 'TEMPLATE' | 'TAG' | 'DAY' | 'HOUR';

/** One group of calls and what they did. Spent tokens and cost leave out cache hits; saved ones are the hits'. */
export interface CallStatsBucket {
  model: string | null;
  apiType: string | null;
  kind: string | null;
  status: string | null;
  cacheStatus: string | null;
  template: string | null;
  tag: string | null;
  /** Start of the UTC day or hour. */
  day: Date | null;
  hour: Date | null;
  calls: number;
  errors: number;
  cacheHits: number;
  cacheMisses: number;
  /** Hits over the calls that consulted the cache (hits and misses); null when none did. */
  hitRate: number | null;
  promptTokens: number;
  completionTokens: number;
  costUsd: number | null;
  tokensSaved: number;
  costSavedUsd: number | null;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  latencyMaxMs: number | null;
}

const dimensionColumns: Record<CallStatsDimension, { expression: string; alias: keyof CallStatsBucket }> = {
  MODEL: { expression: 'c."model"', alias: 'model' },
  API_TYPE: { expression: 'c."apiType"', alias: 'apiType' },
  KIND: { expression: 'c."kind"::text', alias: 'kind' },
  STATUS: { expression: 'c."status"::text', alias: 'status' },
  CACHE_STATUS: { expression: 'c."cacheStatus"::text', alias: 'cacheStatus' },
  TEMPLATE: { expression: 'c."templateName"', alias: 'template' },
  TAG: { expression: 'tag', alias: 'tag' },
  DAY: { expression: `date_trunc('day', c."createdAt", 'UTC')`, alias: 'day' },
  HOUR: { expression: `date_trunc('hour', c."createdAt", 'UTC')`, alias: 'hour' },
};

/**
 * Aggregates the call history in the database, one bucket per combination of the dimensions. A
 * call with several tags counts once in each of its tags' buckets when grouped by TAG (and not at
 * all in an untagged bucket).
 */
export async function callStats(prisma: PrismaClient, filter: CallFilter | null | undefined, groupBy: readonly CallStatsDimension[]): Promise<CallStatsBucket[]> {
  const dimensions = [...new Set(groupBy)];
  if (dimensions.length > 5) throw badUserInput('Group by at most 5 dimensions.', { field: 'groupBy' });
  const where = callWhere(filter);
  const selected = dimensions.map((dimension) => `${dimensionColumns[dimension].expression} AS "${dimensionColumns[dimension].alias}"`);
  const from = dimensions.includes('TAG') ? `"LlmCall" c CROSS JOIN LATERAL unnest(c."tags") AS tag` : `"LlmCall" c`;
  const groupClause = dimensions.length > 0 ? `GROUP BY ${dimensions.map((_dimension, index) => index + 1).join(', ')}` : '';
  const orderClause = dimensions.length > 0 ? `ORDER BY ${dimensions.map((_dimension, index) => `${index + 1}`).join(', ')}` : '';
  const rows = await prisma.$queryRawUnsafe<Record<string, unknown>[]>(
    `SELECT ${[...selected,
      `count(*) AS "calls"`,
      `count(*) FILTER (WHERE c."status" = 'ERROR') AS "errors"`,
      `count(*) FILTER (WHERE c."cacheStatus" = 'HIT') AS "cacheHits"`,
      `count(*) FILTER (WHERE c."cacheStatus" = 'MISS') AS "cacheMisses"`,
      `coalesce(sum(c."promptTokens") FILTER (WHERE c."cacheStatus" <> 'HIT'), 0) AS "promptTokens"`,
      `coalesce(sum(c."completionTokens") FILTER (WHERE c."cacheStatus" <> 'HIT'), 0) AS "completionTokens"`,
      `sum(c."costUsd") FILTER (WHERE c."cacheStatus" <> 'HIT') AS "costUsd"`,
      `coalesce(sum(c."totalTokens") FILTER (WHERE c."cacheStatus" = 'HIT'), 0) AS "tokensSaved"`,
      `sum(c."costUsd") FILTER (WHERE c."cacheStatus" = 'HIT') AS "costSavedUsd"`,
      `percentile_cont(0.5) WITHIN GROUP (ORDER BY c."latencyMs") AS "latencyP50Ms"`,
      `percentile_cont(0.95) WITHIN GROUP (ORDER BY c."latencyMs") AS "latencyP95Ms"`,
      `max(c."latencyMs") AS "latencyMaxMs"`,
    ].join(',\n      ')}
     FROM ${from} WHERE ${where.sql} ${groupClause} ${orderClause}`,
    ...where.parameters,
  );
  return rows.map((row) => {
    const calls = Number(row.calls);
    const cacheHits = Number(row.cacheHits);
    const cacheMisses = Number(row.cacheMisses);
    const number = (value: unknown) => (value === null || value === undefined ? null : Number(value));
    return {
      model: (row.model as string | undefined) ?? null,
      apiType: (row.apiType as string | undefined) ?? null,
      kind: (row.kind as string | undefined) ?? null,
      status: (row.status as string | undefined) ?? null,
      cacheStatus: (row.cacheStatus as string | undefined) ?? null,
      template: (row.template as string | undefined) ?? null,
      tag: (row.tag as string | undefined) ?? null,
      day: (row.day as Date | undefined) ?? null,
      hour: (row.hour as Date | undefined) ?? null,
      calls,
      errors: Number(row.errors),
      cacheHits,
      cacheMisses,
      hitRate: cacheHits + cacheMisses === 0 ? null : cacheHits / (cacheHits + cacheMisses),
      promptTokens: Number(row.promptTokens),
      completionTokens: Number(row.completionTokens),
      costUsd: number(row.costUsd),
      tokensSaved: Number(row.tokensSaved),
      costSavedUsd: number(row.costSavedUsd),
      latencyP50Ms: number(row.latencyP50Ms),
      latencyP95Ms: number(row.latencyP95Ms),
      latencyMaxMs: number(row.latencyMaxMs),
    };
  });
}
