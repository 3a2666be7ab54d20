import type { PrismaClient } from '../db/generated/client.ts';
import { cacheKeyVersion, type CacheEntryValue, type CallKind, type ResponseCache } from '../llm/cache.ts';
import { cacheEntryColumns, cacheEntryFromRow, type CacheEntryRow } from '../llm/cache-rows.ts';
import { costCursorValue, decodeCursor, encodeCursor, pageSize, textCondition, withinTenant, type OrderDirection, type Page, type PageArguments, type ReadQuery } from './calls.ts';

export interface CacheEntryFilter {
  keys?: readonly string[] | null;
  kinds?: readonly CallKind[] | null;
  models?: readonly string[] | null;
  apiTypes?: readonly string[] | null;
  /** Created at or after. */
  from?: Date | null;
  /** Created before. */
  to?: Date | null;
  /** Text contained in the stored request, case-insensitive. */
  text?: string | null;
  /** True: only expired entries; false: only live ones. */
  expired?: boolean | null;
  minHitCount?: number | null;
  /** Entries filled by calls of any of these tenants. */
  tenants?: readonly string[] | null;
}

export type CacheEntryOrderField = 'CREATED_AT' | 'LAST_HIT_AT' | 'HIT_COUNT' | 'COST';

export interface CacheEntryView extends CacheEntryValue {
  keyVersion: number;
  hitCount: number;
  lastHitAt: Date | null;
}

const orderColumns: Record<CacheEntryOrderField, { sql: string; cast: string; parse: (value: unknown) => unknown }> = {
  CREATED_AT: { sql: 'e."createdAt"', cast: '::timestamptz', parse: (value) => new Date(value as string) },
  LAST_HIT_AT: { sql: `COALESCE(e."lastHitAt", 'epoch'::timestamptz)`, cast: '::timestamptz', parse: (value) => new Date(value as string) },
  HIT_COUNT: { sql: 'e."hitCount"', cast: '::integer', parse: Number },
  COST: { sql: 'COALESCE(e."costUsd", -1)', cast: '::numeric', parse: costCursorValue },
};

function entryWhere(filter: CacheEntryFilter | null | undefined, now: Date): { sql: string; parameters: unknown[] } {
  const conditions: string[] = [];
  const parameters: unknown[] = [];
  const parameter = (value: unknown) => {
    parameters.push(value);
    return `$${parameters.length}`;
  };
  const anyOf = (column: string, values: readonly string[] | null | undefined) => {
    if (values && values.length > 0) conditions.push(`${column} = ANY(${parameter([...values])}::text[])`);
  };
  anyOf('e."key"', filter?.keys);
  anyOf('e."kind"::text', filter?.kinds);
  anyOf('e."model"', filter?.models);
  anyOf('e."apiType"', filter?.apiTypes);
  anyOf('e."tenant"', filter?.tenants);
  if (filter?.from) conditions.push(`e."createdAt" >= ${parameter(filter.from)}`);
  if (filter?.to) conditions.push(`e."createdAt" < ${parameter(filter.to)}`);
  if (filter?.text) conditions.push(textCondition('e."request"', parameter(`%${filter.text.replace(/[\\%_]/g, '\\$&')}%`)));
  if (filter?.expired === true) conditions.push(`e."expiresAt" <= ${parameter(now)}`);
  if (filter?.expired === false) conditions.push(`(e."expiresAt" IS NULL OR e."expiresAt" > ${parameter(now)})`);
  if (filter?.minHitCount !== null && filter?.minHitCount !== undefined) conditions.push(`e."hitCount" >= ${parameter(filter.minHitCount)}`);
  return { sql: conditions.length > 0 ? conditions.join(' AND ') : 'TRUE', parameters };
}

const entryColumns = `${cacheEntryColumns('e')}, e."keyVersion", e."hitCount", e."lastHitAt"`;

type CacheEntryViewRow = CacheEntryRow & { keyVersion: number; hitCount: number; lastHitAt: Date | null };

function toView(row: CacheEntryViewRow): CacheEntryView {
  return { ...cacheEntryFromRow(row), keyVersion: row.keyVersion, hitCount: row.hitCount, lastHitAt: row.lastHitAt };
}

export interface CacheEntryQueriesOptions {
  /** For the deletes of invalidate. */
  prisma: PrismaClient;
  /** For the reads (the analytics pool). */
  query: ReadQuery;
  /** The tenant whose entries the caller may see and invalidate; null: every tenant (ADMIN). */
  tenant: string | null;
  cache: Pick<ResponseCache, 'peek'>;
  /** Drops deleted entries from the memory of every instance. */
  forget: (keys: readonly string[] | null, invalidation: { tenant: string | null }) => Promise<void>;
}

export function createCacheEntryQueries({ prisma, query, tenant, cache, forget }: CacheEntryQueriesOptions) {
  /** Entries from the database, else ones still waiting in memory to be written (with no hits yet), in the order of `keys`. */
  const findMany = async (keys: readonly string[]): Promise<(CacheEntryView | null)[]> => {
    const rows = await query<CacheEntryViewRow>(`SELECT ${entryColumns} FROM "CacheEntry" e WHERE e."key" = ANY($1::text[]) AND ($2::text IS NULL OR e."tenant" = $2)`, [
      [...keys],
      tenant,
    ]);
    const byKey = new Map(rows.map((row) => [row.key, row]));
    return keys.map((key) => {
      const row = byKey.get(key);
      if (row) return toView(row);
      const pending = cache.peek(key);
      return pending && (tenant === null || pending.tenant === tenant) ? { ...pending, keyVersion: cacheKeyVersion, hitCount: 0, lastHitAt: null } : null;
    });
  };

  return {
    async find(key: string): Promise<CacheEntryView | null> {
      return (await findMany([key]))[0]!;
    },

    findMany,

    async list(options: PageArguments & { filter?: CacheEntryFilter | null; orderBy?: { field: CacheEntryOrderField; direction: OrderDirection } | null }): Promise<Page<CacheEntryView>> {
      const size = pageSize(options.first);
      const order = orderColumns[options.orderBy?.field ?? 'CREATED_AT'];
      const direction = options.orderBy?.direction ?? 'DESC';
      const where = entryWhere(withinTenant(options.filter, tenant), new Date());
      const parameters = [...where.parameters];
      let keyset = '';
      if (options.after) {
        const [value, key] = decodeCursor(options.after);
        parameters.push(order.parse(value), key);
        keyset = ` AND (${order.sql}, e."key") ${direction === 'DESC' ? '<' : '>'} ($${parameters.length - 1}${order.cast}, $${parameters.length}::text)`;
      }
      const rows = await query<CacheEntryViewRow & { sortValue: unknown }>(
        `SELECT ${entryColumns}, ${order.sql} AS "sortValue" FROM "CacheEntry" e WHERE ${where.sql}${keyset}
         ORDER BY ${order.sql} ${direction}, e."key" ${direction} LIMIT ${size + 1}`,
        parameters,
      );
      return {
        nodes: rows.slice(0, size).map((row) => ({ node: toView(row), cursor: encodeCursor(row.sortValue, row.key) })),
        hasNextPage: rows.length > size,
        totalCount: async () => {
          const [row] = await query<{ count: bigint | string }>(`SELECT count(*) AS "count" FROM "CacheEntry" e WHERE ${where.sql}`, where.parameters);
          return Number(row!.count);
        },
      };
    },

    /**
     * Counts the entries a filter matches and, unless dryRun, deletes them (database and memory) and
     * records the invalidation, with `actor`, in CacheInvalidation.
     */
    async invalidate(requested: CacheEntryFilter | null | undefined, dryRun: boolean, actor: string): Promise<{ matched: number; deleted: number }> {
      const filter = withinTenant(requested, tenant);
      const where = entryWhere(filter, new Date());
      if (dryRun) {
        const [row] = await prisma.$queryRawUnsafe<{ count: bigint }[]>(`SELECT count(*) AS "count" FROM "CacheEntry" e WHERE ${where.sql}`, ...where.parameters);
        return { matched: Number(row!.count), deleted: 0 };
      }
      // The tombstone goes first: from now on no instance stores an answer its call asked for before it,
      // whether or not that answer was in flight when the rows below were deleted.
      const invalidation = await prisma.cacheInvalidation.create({ data: { tenant, filter: (requested ?? {}) as object, count: 0, invalidatedBy: actor, at: new Date() } });
      const rows = await prisma.$queryRawUnsafe<{ key: string }[]>(`DELETE FROM "CacheEntry" e WHERE ${where.sql} RETURNING e."key"`, ...where.parameters);
      await prisma.cacheInvalidation.update({ where: { id: invalidation.id }, data: { count: rows.length } });
      // Every instance forgets all it remembers (it comes back from the database): an answer still in
      // flight may sit in memory under a key the filter matches but the database never held.
      await forget(null, { tenant });
      return { matched: rows.length, deleted: rows.length };
    },
  };
}

export type CacheEntryQueries = ReturnType<typeof createCacheEntryQueries>;
