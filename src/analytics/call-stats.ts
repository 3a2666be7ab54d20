import type { Database } from '../db/database.ts';
import { badUserInput } from '../errors.ts';
import { callWhere, type CallFilter } from './calls.ts';

export type CallStatsDimension = 'MODEL' | 'API_TYPE' | 'KIND' | 'STATUS' | 'CACHE_STATUS' | 'TEMPLATE' | 'TAG' | 'DAY' | 'HOUR' | 'TENANT' | 'API_KEY';

/** One group of calls and what they did. Spent tokens and cost leave out cache hits; saved ones are the hits'. */
export interface CallStatsBucket {
  model: string | null;
  apiType: string | null;
  kind: string | null;
  status: string | null;
  cacheStatus: string | null;
  template: string | null;
  tag: string | null;
  tenant: string | null;
  apiKeyId: string | null;
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

/**
 * How each dimension is grouped, and how its value is shown. Days and hours are grouped on UTC
 * wall-clock time: cheaper than date_trunc with a zone argument, and the expression the
 * migration's extended statistics describe, so the planner knows how few groups there are.
 */
const dimensionColumns: Record<CallStatsDimension, { group: string; select?: string; alias: keyof CallStatsBucket }> = {
  MODEL: { group: 'c."model"', alias: 'model' },
  API_TYPE: { group: 'c."apiType"', alias: 'apiType' },
  KIND: { group: 'c."kind"::text', alias: 'kind' },
  STATUS: { group: 'c."status"::text', alias: 'status' },
  CACHE_STATUS: { group: 'c."cacheStatus"::text', alias: 'cacheStatus' },
  TEMPLATE: { group: 'c."templateName"', alias: 'template' },
  TAG: { group: 'tag', alias: 'tag' },
  TENANT: { group: 'c."tenant"', alias: 'tenant' },
  API_KEY: { group: 'c."apiKeyId"', alias: 'apiKeyId' },
  DAY: { group: `date_trunc('day', c."createdAt" AT TIME ZONE 'UTC')`, select: `date_trunc('day', c."createdAt" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`, alias: 'day' },
  HOUR: { group: `date_trunc('hour', c."createdAt" AT TIME ZONE 'UTC')`, select: `date_trunc('hour', c."createdAt" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`, alias: 'hour' },
};

export interface CallStatsOptions {
  /** Compute the latency percentiles, which cost a sort of every row; without them they are null. @default true */
  percentiles?: boolean;
}

/**
 * Aggregates the call history in the database, one bucket per combination of the dimensions. A
 * call with several tags counts once in each of its tags' buckets when grouped by TAG (and not at
 * all in an untagged bucket).
 */
export async function callStats(
  database: Pick<Database, 'query'>,
  filter: CallFilter | null | undefined,
  groupBy: readonly CallStatsDimension[],
  options: CallStatsOptions = {},
): Promise<CallStatsBucket[]> {
  const dimensions = [...new Set(groupBy)];
  if (dimensions.length > 5) throw badUserInput('Group by at most 5 dimensions.', { field: 'groupBy' });
  const where = callWhere(filter);
  const columns = dimensions.map((dimension) => dimensionColumns[dimension]);
  const selected = columns.map((column) => `${column.select ?? column.group} AS "${column.alias}"`);
  const from = dimensions.includes('TAG') ? `"LlmCall" c CROSS JOIN LATERAL unnest(c."tags") AS tag` : `"LlmCall" c`;
  const groupClause = columns.length > 0 ? `GROUP BY ${columns.map((column) => column.group).join(', ')}` : '';
  const orderClause = columns.length > 0 ? `ORDER BY ${columns.map((_column, index) => `${index + 1}`).join(', ')}` : '';
  const percentiles = options.percentiles ?? true;
  const rows = await database.query(
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
      percentiles ? `percentile_cont(0.5) WITHIN GROUP (ORDER BY c."latencyMs") AS "latencyP50Ms"` : `NULL::float8 AS "latencyP50Ms"`,
      percentiles ? `percentile_cont(0.95) WITHIN GROUP (ORDER BY c."latencyMs") AS "latencyP95Ms"` : `NULL::float8 AS "latencyP95Ms"`,
      `max(c."latencyMs") AS "latencyMaxMs"`,
    ].join(',\n      ')}
     FROM ${from} WHERE ${where.sql} ${groupClause} ${orderClause}`,
    where.parameters,
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
      tenant: (row.tenant as string | undefined) ?? null,
      apiKeyId: (row.apiKeyId as string | undefined) ?? null,
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
