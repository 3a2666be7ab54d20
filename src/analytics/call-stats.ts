import type { Database } from '../db/database.ts';
import { badUserInput } from '../errors.ts';
import { usdOrNull, type Usd } from '../money.ts';
import { callMetrics, latencyBucketSql, latencyBucketValue, mergedMetric, rolledCallColumns, utcDay } from './call-rollup.ts';
import { callWhere, type CallFilter } from './calls.ts';

export type CallStatsDimension = 'MODEL' | 'API_TYPE' | 'KIND' | 'STATUS' | 'CACHE_STATUS' | 'TEMPLATE' | 'TAG' | 'DAY' | 'HOUR' | 'TENANT' | 'API_KEY';

/** One group of calls and what they did. Spent tokens leave out cache hits, saved ones are the hits'; USD spent and saved are exact decimal strings. */
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
  costUsd: Usd | null;
  tokensSaved: number;
  costSavedUsd: Usd | null;
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
  /** Compute the latency percentiles, which cost a sort of every row (or a merge of histograms); without them they are null. @default true */
  percentiles?: boolean;
  /** Read every call, never the rollup: exact percentiles, and the cost of a full scan. @default false */
  exact?: boolean;
}

/** Filters the rollup cannot answer: they read columns it does not keep. */
const unrolledFilters = ['tags', 'errorCodes', 'cacheKeys', 'text'] as const;
/** What the daily rollup keeps besides its day. */
const dayDimensions: readonly CallStatsDimension[] = ['MODEL', 'KIND', 'TENANT', 'API_KEY', 'DAY'];
const dayFilters = ['from', 'to', 'models', 'kinds', 'tenants', 'apiKeyIds'] as const;

const hourMs = 3_600_000;
const dayMs = 24 * hourMs;
const ceilTo = (date: Date, unit: number) => new Date(Math.ceil(date.getTime() / unit) * unit);
const floorTo = (date: Date, unit: number) => new Date(Math.floor(date.getTime() / unit) * unit);
const present = (value: unknown) => value !== null && value !== undefined && (!Array.isArray(value) || value.length > 0) && value !== '';

/**
 * Aggregates the call history in the database, one bucket per combination of the dimensions. A
 * call with several tags counts once in each of its tags' buckets when grouped by TAG (and not at
 * all in an untagged bucket).
 *
 * Complete hours already rolled up (src/analytics/call-rollup.ts) are read from the rollup, the
 * rest from the calls, in one statement. Counts, sums and the longest latency are the same either
 * way; percentiles come from latency histograms (within 1% of percentile_cont) whenever a rolled-up
 * hour is in the range, exact (percentile_cont) otherwise. TAG, and filters on tags, error codes,
 * cache keys or text, always read the calls.
 */
export async function callStats(
  database: Pick<Database, 'query'>,
  filter: CallFilter | null | undefined,
  groupBy: readonly CallStatsDimension[],
  options: CallStatsOptions = {},
): Promise<CallStatsBucket[]> {
  const dimensions = [...new Set(groupBy)];
  if (dimensions.length > 5) throw badUserInput('Group by at most 5 dimensions.', { field: 'groupBy' });
  const percentiles = options.percentiles ?? true;
  const rollable = !options.exact && !dimensions.includes('TAG') && !unrolledFilters.some((field) => present(filter?.[field]));
  const lo = filter?.from ? ceilTo(filter.from, hourMs) : null;
  const toFloor = filter?.to ? floorTo(filter.to, hourMs) : null;
  let rows: Record<string, unknown>[] | null = null;
  if (rollable) {
    // Whether any rolled-up hour is in the range: if none, the exact query costs the same.
    const [usable] = await database.query<{ usable: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM "LlmCallRollup" r WHERE r."hour" >= $1::timestamptz AND r."hour" < least($2::timestamptz,
         coalesce((SELECT "rolledUntil" FROM "LlmCallRollupState" WHERE "id" = 1), '-infinity'))) AS "usable"`,
      [lo ?? '-infinity', toFloor ?? 'infinity'],
    );
    if (usable?.usable) {
      const days = dimensions.every((dimension) => dayDimensions.includes(dimension)) && Object.entries(filter ?? {}).every(([field, value]) => !present(value) || (dayFilters as readonly string[]).includes(field));
      const { sql, parameters } = rollupQuery(filter, dimensions, { percentiles, days, lo, toFloor, dayLo: filter?.from ? ceilTo(filter.from, dayMs) : null });
      rows = await database.query(sql, parameters);
      if (percentiles) rows = withPercentiles(rows, dimensions);
    }
  }
  rows ??= await exactQuery(database, filter, dimensions, percentiles);
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
      costUsd: usdOrNull(row.costUsd),
      tokensSaved: Number(row.tokensSaved),
      costSavedUsd: usdOrNull(row.costSavedUsd),
      latencyP50Ms: number(row.latencyP50Ms),
      latencyP95Ms: number(row.latencyP95Ms),
      latencyMaxMs: number(row.latencyMaxMs),
    };
  });
}

const groupParts = (dimensions: readonly CallStatsDimension[]) => {
  const columns = dimensions.map((dimension) => dimensionColumns[dimension]);
  return {
    selected: columns.map((column) => `${column.select ?? column.group} AS "${column.alias}"`),
    groups: columns.map((column) => column.group),
    aliases: columns.map((column) => `"${column.alias}"`),
  };
};
const groupClause = (groups: readonly string[]) => (groups.length > 0 ? `GROUP BY ${groups.join(', ')}` : '');
const orderClause = (count: number) => (count > 0 ? `ORDER BY ${Array.from({ length: count }, (_value, index) => index + 1).join(', ')}` : '');

/** Every call read: percentile_cont over their latencies. */
async function exactQuery(database: Pick<Database, 'query'>, filter: CallFilter | null | undefined, dimensions: readonly CallStatsDimension[], percentiles: boolean) {
  const where = callWhere(filter);
  const { selected, groups } = groupParts(dimensions);
  const from = dimensions.includes('TAG') ? `"LlmCall" c CROSS JOIN LATERAL unnest(c."tags") AS tag` : `"LlmCall" c`;
  return database.query(
    `SELECT ${[...selected,
      ...callMetrics.map((metric) => `${metric.fromCalls} AS "${metric.name}"`),
      percentiles ? `percentile_cont(0.5) WITHIN GROUP (ORDER BY c."latencyMs") AS "latencyP50Ms"` : `NULL::float8 AS "latencyP50Ms"`,
      percentiles ? `percentile_cont(0.95) WITHIN GROUP (ORDER BY c."latencyMs") AS "latencyP95Ms"` : `NULL::float8 AS "latencyP95Ms"`,
    ].join(',\n      ')}
     FROM ${from} WHERE ${where.sql} ${groupClause(groups)} ${orderClause(groups.length)}`,
    where.parameters,
  );
}

/**
 * The rollup read with the calls around it, in one statement (one snapshot). With lo = the first
 * whole hour of the filter and hi = the earlier of its last whole hour and the rollup's watermark:
 * calls before lo or from hi on, and those of pending hours, are read from "LlmCall"; the other
 * hours from "LlmCallRollupDay" for whole days without a pending hour (when the daily rollup keeps
 * every dimension and filter asked for), else from "LlmCallRollup". Each call is read once.
 */
function rollupQuery(
  filter: CallFilter | null | undefined,
  dimensions: readonly CallStatsDimension[],
  options: { percentiles: boolean; days: boolean; lo: Date | null; toFloor: Date | null; dayLo: Date | null },
): { sql: string; parameters: unknown[] } {
  const parameters: unknown[] = [options.lo ?? '-infinity', options.toFloor ?? 'infinity', options.dayLo ?? '-infinity'];
  const where = callWhere(filter, parameters.length);
  parameters.push(...where.parameters);
  // The rollup's rows are filtered as calls are, on the columns they share; time is the bounds' business.
  const rolledWhere = callWhere({ ...filter, from: null, to: null }, parameters.length);
  parameters.push(...rolledWhere.parameters);
  const { selected, aliases } = groupParts(dimensions);
  const { percentiles } = options;
  const bucket = latencyBucketSql('c."latencyMs"');
  const callColumns = `SELECT ${rolledCallColumns} FROM`;
  const rawCalls = [
    `${callColumns} "LlmCall" c, bounds b WHERE c."createdAt" < b."lo" AND ${where.sql}`,
    `${callColumns} "LlmCall" c, bounds b WHERE c."createdAt" >= b."hi" AND ${where.sql}`,
    `${callColumns} bounds b JOIN pending p ON p."hour" >= b."lo" AND p."hour" < b."hi"
       JOIN "LlmCall" c ON c."createdAt" >= p."hour" AND c."createdAt" < p."hour" + interval '1 hour' WHERE ${where.sql}`,
  ].join('\n    UNION ALL\n    ');
  const notPending = `NOT EXISTS (SELECT 1 FROM pending p WHERE p."hour" = r."hour")`;
  const hourRows = (range: string, from = `"LlmCallRollup" r, bounds b`) => `SELECT r.*, r."hour" AS "createdAt" FROM ${from} WHERE ${range} AND ${notPending}`;
  const pendingDay = (day: string) => `EXISTS (SELECT 1 FROM pending p WHERE p."hour" >= ${day} AND p."hour" < ${day} + interval '1 day')`;
  const rolledParts = options.days
    ? [
        `SELECT r.*, r."day" AS "createdAt" FROM "LlmCallRollupDay" r, bounds b WHERE r."day" >= b."dayLo" AND r."day" < b."dayHi" AND NOT ${pendingDay('r."day"')}`,
        hourRows(`r."hour" >= b."lo" AND r."hour" < least(b."dayLo", b."hi")`),
        hourRows(`r."hour" >= greatest(b."dayHi", b."lo") AND r."hour" < b."hi"`),
        hourRows(
          `d."day" >= b."dayLo" AND d."day" < b."dayHi"`,
          `bounds b, (SELECT DISTINCT ${utcDay('p."hour"')} AS "day" FROM pending p) d JOIN "LlmCallRollup" r ON r."hour" >= d."day" AND r."hour" < d."day" + interval '1 day'`,
        ),
      ]
    : [hourRows(`r."hour" >= b."lo" AND r."hour" < b."hi"`)];
  const storedMetrics = callMetrics.map((metric) => `c."${metric.name}"`).join(', ');
  const rolled = rolledParts.map((part) => `SELECT ${[...selected, storedMetrics, 'c."latencyBuckets"', 'c."latencyCounts"'].join(', ')} FROM (${part}) c WHERE ${rolledWhere.sql}`);
  const head = `WITH pending AS MATERIALIZED (SELECT "hour" FROM "LlmCallRollupPending"),
  limits AS (SELECT $1::timestamptz AS "lo", greatest($1::timestamptz, least($2::timestamptz,
    coalesce((SELECT "rolledUntil" FROM "LlmCallRollupState" WHERE "id" = 1), '-infinity'))) AS "hi"),
  bounds AS MATERIALIZED (SELECT l."lo", l."hi", $3::timestamptz AS "dayLo",
    greatest($3::timestamptz, date_trunc('day', l."hi" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS "dayHi" FROM limits l),
  calls AS (${rawCalls}),
  rolled AS (${rolled.join('\n    UNION ALL\n    ')})`;
  const merged = (source: string, filter = '') => callMetrics.map((metric) => `${mergedMetric(metric, source, filter)} AS "${metric.name}"`);
  const fromCalls = callMetrics.map((metric) => `${metric.fromCalls} AS "${metric.name}"`);
  const metricRows = `SELECT ${[...selected, ...fromCalls].join(', ')} FROM calls c ${groupClause(selectedGroups(dimensions))}
    UNION ALL
    SELECT ${[...aliases, ...callMetrics.map((metric) => `r."${metric.name}"`)].join(', ')} FROM rolled r`;
  const groups = aliases.length > 0 ? `GROUP BY ${aliases.join(', ')}` : '';
  if (!percentiles) {
    const sql = `${head}
SELECT ${[...aliases, ...merged('e'), 'NULL::float8 AS "latencyP50Ms"', 'NULL::float8 AS "latencyP95Ms"'].join(', ')} FROM (
    ${metricRows}
  ) e ${groups} ${orderClause(aliases.length)}`;
    return { sql, parameters };
  }
  // Each group's counts and sums merged here; its histograms (the rollup rows' and the calls'
  // latencies bucketed) sent as they are, to be merged in `withPercentiles`: cheaper than a merge in SQL.
  const noMetrics = callMetrics.map((metric) => (metric.merge === 'max' ? 'NULL::float8' : 'NULL::numeric'));
  const asText = (array: string) => `array_to_string(${array}, ',')`;
  const sql = `${head}
SELECT 'm' AS "part", ${[...aliases, ...merged('e'), 'NULL AS "latencyBuckets"', 'NULL AS "latencyCounts"'].join(', ')} FROM (
    ${metricRows}
  ) e ${groups}
UNION ALL
SELECT 'h', ${[...aliases.map((alias) => `r.${alias}`), ...noMetrics, asText('r."latencyBuckets"'), asText('r."latencyCounts"')].join(', ')} FROM rolled r
UNION ALL
SELECT 'h', ${[...aliases.map((alias) => `b.${alias}`), ...noMetrics, asText('array_agg(b."bucket" ORDER BY b."bucket")'), asText('array_agg(b."n" ORDER BY b."bucket")')].join(', ')} FROM (
    SELECT ${[...selected, `${bucket} AS "bucket"`, 'count(*) AS "n"'].join(', ')} FROM calls c ${groupClause([...selectedGroups(dimensions), '"bucket"'])}
  ) b ${aliases.length > 0 ? `GROUP BY ${aliases.map((alias) => `b.${alias}`).join(', ')}` : ''}
${aliases.length > 0 ? `ORDER BY ${aliases.map((_alias, index) => index + 2).join(', ')}` : ''}`;
  return { sql, parameters };
}

/**
 * The groups ('m' rows) with their percentiles, read from their histograms ('h' rows): the buckets
 * holding the two ranks percentile_cont interpolates between, read as their middles.
 */
function withPercentiles(rows: Record<string, unknown>[], dimensions: readonly CallStatsDimension[]): Record<string, unknown>[] {
  const aliases = dimensions.map((dimension) => dimensionColumns[dimension].alias);
  const keyOf = (row: Record<string, unknown>) => JSON.stringify(aliases.map((alias) => (row[alias] instanceof Date ? (row[alias] as Date).getTime() : (row[alias] ?? null))));
  const histograms = new Map<string, Map<number, number>>();
  for (const row of rows) {
    if (row.part !== 'h' || !row.latencyBuckets) continue;
    const key = keyOf(row);
    let histogram = histograms.get(key);
    if (!histogram) histograms.set(key, (histogram = new Map()));
    const buckets = String(row.latencyBuckets).split(',');
    const counts = String(row.latencyCounts).split(',');
    for (let index = 0; index < buckets.length; index += 1) {
      const bucket = Number(buckets[index]);
      histogram.set(bucket, (histogram.get(bucket) ?? 0) + Number(counts[index]));
    }
  }
  return rows
    .filter((row) => row.part === 'm')
    .map((row) => {
      const histogram = histograms.get(keyOf(row));
      if (!histogram) return { ...row, latencyP50Ms: null, latencyP95Ms: null };
      const sorted = [...histogram].sort((a, b) => a[0] - b[0]);
      const total = sorted.reduce((sum, [, count]) => sum + count, 0);
      const valueAt = (rank: number) => {
        let upto = 0;
        for (const [bucket, count] of sorted) {
          upto += count;
          if (upto > rank) return latencyBucketValue(bucket);
        }
        return latencyBucketValue(sorted.at(-1)![0]);
      };
      const percentile = (fraction: number) => {
        const position = fraction * (total - 1);
        const rank = Math.floor(position);
        const low = valueAt(rank);
        return rank + 1 < total ? low + (position - rank) * (valueAt(rank + 1) - low) : low;
      };
      return { ...row, latencyP50Ms: percentile(0.5), latencyP95Ms: percentile(0.95) };
    });
}

/** GROUP BY positions of the selected dimensions (the calls' expressions). */
function selectedGroups(dimensions: readonly CallStatsDimension[]): string[] {
  return dimensions.map((_dimension, index) => `${index + 1}`);
}
