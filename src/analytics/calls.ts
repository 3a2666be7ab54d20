import { badUserInput } from '../errors.ts';
import { parseDecimal } from '../money.ts';
import type { CacheStatus, CallKind } from '../llm/cache.ts';
import type { AttemptRow, CallRecord } from '../llm/history.ts';

const callIdPattern = /^[0-9a-f-]{36}$/i;

/** Which calls a query is about; every field narrows, lists match any of their values. */
export interface CallFilter {
  from?: Date | null;
  to?: Date | null;
  models?: readonly string[] | null;
  apiTypes?: readonly string[] | null;
  kinds?: readonly CallKind[] | null;
  statuses?: readonly ('SUCCESS' | 'ERROR')[] | null;
  cacheStatuses?: readonly CacheStatus[] | null;
  /** Calls carrying any of these tags. */
  tags?: readonly string[] | null;
  templateNames?: readonly string[] | null;
  errorCodes?: readonly string[] | null;
  /** Calls that read or wrote these cache entries. */
  cacheKeys?: readonly string[] | null;
  /** Text contained in the request (messages or embedded texts), case-insensitive. */
  text?: string | null;
  /** Calls of any of these tenants. */
  tenants?: readonly string[] | null;
  /** Calls made with any of these API keys. */
  apiKeyIds?: readonly string[] | null;
}

/**
 * A filter narrowed to what a caller may read: its own tenant, or anything it asks for when `tenant`
 * is null (ADMIN). Every read of the history and the cache passes through here.
 */
export function withinTenant<T extends { tenants?: readonly string[] | null }>(filter: T | null | undefined, tenant: string | null): T | null | undefined {
  return tenant === null ? filter : ({ ...filter, tenants: [tenant] } as unknown as T);
}

/** A SQL condition with its parameters, numbered from `offset + 1`. */
interface SqlCondition {
  sql: string;
  parameters: unknown[];
}

/** The WHERE clause of a call filter over "LlmCall" aliased `c`. */
export function callWhere(filter: CallFilter | null | undefined, offset = 0): SqlCondition {
  const conditions: string[] = [];
  const parameters: unknown[] = [];
  const parameter = (value: unknown) => {
    parameters.push(value);
    return `$${offset + parameters.length}`;
  };
  const anyOf = (column: string, values: readonly string[] | null | undefined, cast = '') => {
    if (values && values.length > 0) conditions.push(`${column}${cast} = ANY(${parameter([...values])}::text[])`);
  };
  if (filter?.from) conditions.push(`c."createdAt" >= ${parameter(filter.from)}`);
  if (filter?.to) conditions.push(`c."createdAt" < ${parameter(filter.to)}`);
  anyOf('c."model"', filter?.models);
  anyOf('c."apiType"', filter?.apiTypes);
  anyOf('c."kind"', filter?.kinds, '::text');
  anyOf('c."status"', filter?.statuses, '::text');
  anyOf('c."cacheStatus"', filter?.cacheStatuses, '::text');
  anyOf('c."templateName"', filter?.templateNames);
  anyOf('c."errorCode"', filter?.errorCodes);
  anyOf('c."cacheKey"', filter?.cacheKeys);
  anyOf('c."tenant"', filter?.tenants);
  if (filter?.apiKeyIds && filter.apiKeyIds.length > 0) {
    conditions.push(`c."apiKeyId" = ANY(${parameter(filter.apiKeyIds.filter((id) => callIdPattern.test(id)))}::uuid[])`);
  }
  if (filter?.tags && filter.tags.length > 0) conditions.push(`c."tags" && ${parameter([...filter.tags])}::text[]`);
  if (filter?.text) {
    const pattern = parameter(`%${filter.text.replace(/[\\%_]/g, '\\$&')}%`);
    conditions.push(`EXISTS (SELECT 1 FROM "LlmCallBody" b WHERE b."callId" = c."id" AND ${textCondition('b."requestBody"', pattern)})`);
  }
  return { sql: conditions.length > 0 ? conditions.join(' AND ') : 'TRUE', parameters };
}

/**
 * The messages' contents or the embedded texts of a stored request contain a pattern. They are read
 * out of the JSON rather than matched in its text, where quotes, backslashes and newlines are escaped
 * and the keys and parameters ("max_tokens", the model) would match too.
 */
export function textCondition(request: string, pattern: string): string {
  const arrayAt = (path: string) => `CASE WHEN jsonb_typeof(${request}->'${path}') = 'array' THEN ${request}->'${path}' ELSE '[]'::jsonb END`;
  return `(EXISTS (SELECT 1 FROM jsonb_array_elements(${arrayAt('messages')}) AS message WHERE message->>'content' ILIKE ${pattern})
    OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(${arrayAt('input')}) AS input WHERE input ILIKE ${pattern})
    OR (jsonb_typeof(${request}->'input') = 'string' AND ${request}->>'input' ILIKE ${pattern}))`;
}

export type CallOrderField = 'CREATED_AT' | 'LATENCY' | 'TOKENS' | 'COST';
export type OrderDirection = 'ASC' | 'DESC';

// Nulls sort as -1 so that keyset cursors compare plain values.
const callOrderColumns: Record<CallOrderField, string> = {
  CREATED_AT: 'c."createdAt"',
  LATENCY: 'c."latencyMs"',
  TOKENS: 'COALESCE(c."totalTokens", -1)',
  COST: 'COALESCE(c."costUsd", -1)',
};

/** The narrow row of a call, without its bodies. */
const callRowColumns = `c."id", c."createdAt", c."tenant", c."apiKeyId", c."servedByCallId", c."kind"::text AS "kind", c."apiType", c."model", c."status"::text AS "status",
  c."cacheStatus"::text AS "cacheStatus", c."cacheKey", c."errorCode", c."errorMessage", c."attemptCount", c."latencyMs", c."streamed", c."timeToFirstTokenMs",
  c."promptTokens", c."completionTokens", c."totalTokens", c."estimatedPromptTokens", trim_scale(c."costUsd")::text AS "costUsd", trim_scale(c."costSavedUsd")::text AS "costSavedUsd", c."templateName",
  c."templateHash", c."tags"`;
const callColumns = `${callRowColumns}, body."metadata", body."requestBody", body."responseBody"`;
const callTables = `"LlmCall" c LEFT JOIN "LlmCallBody" body ON body."callId" = c."id"`;

/** What a call carries beside its row, in "LlmCallBody". */
export type CallBody = Pick<CallRecord, 'metadata' | 'requestBody' | 'responseBody'>;

/**
 * A call as the API shows it: attempts are loaded on demand for rows read from the database, and so
 * are the bodies of a narrow row (`matchCalls`), where they are left undefined.
 */
export type CallView = Omit<CallRecord, 'attempts' | keyof CallBody> & { attempts?: AttemptRow[] } & { [K in keyof CallBody]?: CallBody[K] };

export interface Page<T> {
  nodes: { node: T; cursor: string }[];
  hasNextPage: boolean;
  /** Counts every row of the filter; run only when asked. */
  totalCount: () => Promise<number>;
}

export interface PageArguments {
  first?: number | null;
  after?: string | null;
}

const maxPageSize = 100;
export const defaultPageSize = 20;

export function pageSize(first: number | null | undefined): number {
  const size = first ?? defaultPageSize;
  if (!Number.isInteger(size) || size < 0 || size > maxPageSize) throw badUserInput(`first must be between 0 and ${maxPageSize}, got ${size}.`, { field: 'first' });
  return size;
}

/** Cursors are opaque to clients: the sort value and the id of the row, base64url JSON. */
export function encodeCursor(value: unknown, id: string): string {
  return Buffer.from(JSON.stringify([value instanceof Date ? value.toISOString() : value, id])).toString('base64url');
}

/** A COST cursor's value: a decimal string (numeric arrives as text), -1 for unpriced calls. */
export function costCursorValue(value: unknown): string {
  if ((typeof value === 'string' || typeof value === 'number') && parseDecimal(String(value)) !== null) return String(value);
  throw badUserInput('The cursor is not valid; use a cursor from a previous page of the same query.', { field: 'after' });
}

export function decodeCursor(cursor: string): [value: unknown, id: string] {
  try {
    const decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(decoded) && decoded.length === 2 && typeof decoded[1] === 'string') return decoded as [unknown, string];
  } catch {
    // Reported below.
  }
  throw badUserInput('The cursor is not valid; use a cursor from a previous page of the same query.', { field: 'after' });
}

/** Runs one read; the app gives the analytics pool's (Database.analyticsQuery). */
export type ReadQuery = <Row = Record<string, unknown>>(sql: string, parameters?: unknown[]) => Promise<Row[]>;

const attemptColumns = `a."callId", a."number", a."startedAt", a."latencyMs", a."httpStatus", a."errorCode", a."errorMessage", a."waitMs", a."requestId"`;

interface PageQueryOptions extends PageArguments {
  filter?: CallFilter | null;
  orderBy?: { field: CallOrderField; direction: OrderDirection } | null;
}

/** The SELECT of one page (size + 1 rows, to tell whether another follows), its parameters numbered from `offset + 1`. */
function pageQuery(options: PageQueryOptions, offset = 0, extraCondition = '') {
  const size = pageSize(options.first);
  const field = options.orderBy?.field ?? 'CREATED_AT';
  const direction = options.orderBy?.direction ?? 'DESC';
  const column = callOrderColumns[field];
  const where = callWhere(options.filter, offset);
  const parameters = [...where.parameters];
  let keyset = '';
  if (options.after) {
    const [value, id] = decodeCursor(options.after);
    parameters.push(field === 'CREATED_AT' ? new Date(value as string) : field === 'COST' ? costCursorValue(value) : Number(value), id);
    const cast = field === 'CREATED_AT' ? '::timestamptz' : field === 'COST' ? '::numeric' : '::double precision';
    const last = offset + parameters.length;
    keyset = ` AND (${column}, c."id") ${direction === 'DESC' ? '<' : '>'} ($${last - 1}${cast}, $${last}::uuid)`;
  }
  const sql = `SELECT ${callColumns}, ${column} AS "sortValue" FROM ${callTables} WHERE ${where.sql}${extraCondition}${keyset}
     ORDER BY ${column} ${direction}, c."id" ${direction} LIMIT ${size + 1}`;
  return { sql, parameters, size, where };
}

function toPage(rows: Record<string, unknown>[], size: number, totalCount: () => Promise<number>): Page<CallView> {
  return {
    nodes: rows.slice(0, size).map((row) => {
      const { sortValue, batchKey: _batchKey, ...call } = row;
      return { node: call as unknown as CallView, cursor: encodeCursor(sortValue, call.id as string) };
    }),
    hasNextPage: rows.length > size,
    totalCount,
  };
}

/** An entry as it is, for its served calls: its key and the call that filled it. */
export interface EntryIdentity {
  key: string;
  createdByCallId: string | null;
}

/** The history as one caller may read it: `tenant` null reads every tenant (ADMIN). */
export function createCallQueries(query: ReadQuery, tenant: string | null) {
  const hitsFilter = withinTenant<CallFilter>({ cacheStatuses: ['HIT'] }, tenant);
  return {
    async find(id: string): Promise<CallView | null> {
      if (!callIdPattern.test(id)) throw badUserInput(`"${id}" is not a call id.`, { field: 'id' });
      return (await this.findMany([id]))[0]!;
    },

    /** Several calls in one query, in the order of `ids` (null where none has that id). */
    async findMany(ids: readonly string[]): Promise<(CallView | null)[]> {
      const valid = ids.filter((id) => callIdPattern.test(id));
      const rows =
        valid.length === 0
          ? []
          : await query<CallView>(`SELECT ${callColumns} FROM ${callTables} WHERE c."id" = ANY($1::uuid[]) AND ($2::text IS NULL OR c."tenant" = $2)`, [valid, tenant]);
      const byId = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => byId.get(id) ?? null);
    },

    /** The bodies of several calls in one query, in the order of `ids` (null where none is stored). */
    async bodiesOf(ids: readonly string[]): Promise<(CallBody | null)[]> {
      const rows = await query<CallBody & { callId: string }>(
        `SELECT b."callId", b."metadata", b."requestBody", b."responseBody" FROM "LlmCallBody" b JOIN "LlmCall" c ON c."id" = b."callId"
         WHERE b."callId" = ANY($1::uuid[]) AND ($2::text IS NULL OR c."tenant" = $2)`,
        [ids.filter((id) => callIdPattern.test(id)), tenant],
      );
      const byId = new Map(rows.map(({ callId, ...body }) => [callId, body]));
      return ids.map((id) => byId.get(id) ?? null);
    },

    async attempts(callId: string): Promise<AttemptRow[]> {
      return (await this.attemptsOf([callId]))[0]!;
    },

    /** The attempts of several calls in one query, per call in the order of `callIds`. */
    async attemptsOf(callIds: readonly string[]): Promise<AttemptRow[][]> {
      const rows = await query<AttemptRow & { callId: string }>(
        `SELECT ${attemptColumns} FROM "LlmAttempt" a WHERE a."callId" = ANY($1::uuid[]) ORDER BY a."callId", a."number"`,
        [[...callIds]],
      );
      const byCall = new Map<string, AttemptRow[]>(callIds.map((id) => [id, []]));
      for (const { callId, ...attempt } of rows) byCall.get(callId)?.push(attempt);
      return callIds.map((id) => byCall.get(id)!);
    },

    /** A page of calls in a stable order: new calls never shift the pages after a cursor. */
    async list(options: PageQueryOptions): Promise<Page<CallView>> {
      const { sql, parameters, size, where } = pageQuery({ ...options, filter: withinTenant(options.filter, tenant) });
      const rows = await query(sql, parameters);
      return toPage(rows, size, async () => {
        const [row] = await query<{ count: bigint | string }>(`SELECT count(*) AS "count" FROM "LlmCall" c WHERE ${where.sql}`, where.parameters);
        return Number(row!.count);
      });
    },

    /**
     * The same page of the cache hits of several entries in one query (one LATERAL page per entry),
     * in the order of `entries`; `totalCount` asks `countHits`. A hit belongs to the entry that
     * served it (its key and the call that filled it), not to a later answer stored under the key.
     */
    async hitPages(entries: readonly EntryIdentity[], page: PageArguments, countHits: (entry: EntryIdentity) => Promise<number>): Promise<Page<CallView>[]> {
      const { sql, parameters, size } = pageQuery({ ...page, filter: hitsFilter }, 2, ` AND c."cacheKey" = k."key" AND c."servedByCallId" IS NOT DISTINCT FROM k."servedBy"`);
      const rows = await query(
        `SELECT k."index" AS "batchKey", page.* FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS k("key", "servedBy", "index") CROSS JOIN LATERAL (${sql}) page`,
        [entries.map((entry) => entry.key), entries.map((entry) => entry.createdByCallId), ...parameters],
      );
      const byIndex = new Map<number, Record<string, unknown>[]>(entries.map((_entry, index) => [index + 1, []]));
      for (const row of rows) byIndex.get(Number(row.batchKey))?.push(row);
      return entries.map((entry, index) => toPage(byIndex.get(index + 1)!, size, () => countHits(entry)));
    },

    /** How many cache hits each entry served, in the order of `entries`. */
    async countHits(entries: readonly EntryIdentity[]): Promise<number[]> {
      const where = callWhere(hitsFilter, 2);
      const rows = await query<{ index: string | number; count: bigint | string }>(
        `SELECT k."index", count(c."id") AS "count" FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS k("key", "servedBy", "index")
         JOIN "LlmCall" c ON c."cacheKey" = k."key" AND c."servedByCallId" IS NOT DISTINCT FROM k."servedBy" AND ${where.sql}
         GROUP BY k."index"`,
        [entries.map((entry) => entry.key), entries.map((entry) => entry.createdByCallId), ...where.parameters],
      );
      const byIndex = new Map(rows.map((row) => [Number(row.index), Number(row.count)]));
      return entries.map((_entry, index) => byIndex.get(index + 1) ?? 0);
    },
  };
}

export type CallQueries = ReturnType<typeof createCallQueries>;

/**
 * Which of several readers' filters each of some calls matches, in one query: the narrow rows of the
 * calls among `ids` that match any filter, oldest first, each with `matches[i]` telling whether it
 * matches `filters[i]`. Each filter must already be narrowed to its reader's tenant (`withinTenant`).
 */
export async function matchCalls(query: ReadQuery, ids: readonly string[], filters: readonly (CallFilter | null | undefined)[]): Promise<{ call: CallView; matches: boolean[] }[]> {
  const valid = ids.filter((id) => callIdPattern.test(id));
  if (valid.length === 0 || filters.length === 0) return [];
  const parameters: unknown[] = [valid];
  const conditions = filters.map((filter) => {
    const where = callWhere(filter, parameters.length);
    parameters.push(...where.parameters);
    return `(${where.sql})`;
  });
  const rows = await query<CallView & { matches: boolean[] }>(
    `SELECT * FROM (SELECT ${callRowColumns}, ARRAY[${conditions.join(', ')}]::boolean[] AS "matches" FROM "LlmCall" c WHERE c."id" = ANY($1::uuid[])) m
     WHERE true = ANY(m."matches") ORDER BY m."createdAt", m."id"`,
    parameters,
  );
  return rows.map(({ matches, ...call }) => ({ call, matches }));
}
