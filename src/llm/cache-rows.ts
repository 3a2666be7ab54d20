import { usdOrNull } from '../money.ts';
import { cacheKeyVersion, type CacheEntryValue, type CallKind } from './cache.ts';

/*
 * The CacheEntry table as the cache reads and writes it. Its rows travel to the database in the
 * history writer's batches (one durable queue and one statement for every table the hot path
 * writes), but what they hold and how they are written is the cache's to say, here.
 */

/** The columns of a CacheEntry row as cacheEntryFromRow reads them, the table aliased `alias`. */
export function cacheEntryColumns(alias: string): string {
  const columns = ['key', 'apiType', 'model', 'request', 'response', 'promptTokens', 'completionTokens', 'totalTokens', 'createdAt', 'expiresAt', 'createdByCallId', 'tenant', 'apiKeyId'];
  // numeric as text, exact ("0.000525300000"): cacheEntryFromRow writes it shortest.
  return [`${alias}."kind"::text AS "kind"`, `${alias}."costUsd"::text AS "costUsd"`, ...columns.map((column) => `${alias}."${column}"`)].join(', ');
}

/** A CacheEntry row as the database answers it (selected with cacheEntryColumns). */
export interface CacheEntryRow {
  key: string;
  kind: CallKind;
  apiType: string;
  model: string;
  request: unknown;
  response: unknown;
  promptTokens: number | null;
  completionTokens: number | null;
  totalTokens: number | null;
  /** USD, a decimal string. */
  costUsd: string | null;
  createdAt: Date | string;
  expiresAt: Date | string | null;
  createdByCallId: string | null;
  tenant: string;
  apiKeyId: string | null;
}

export function cacheEntryFromRow(row: CacheEntryRow): CacheEntryValue {
  return {
    key: row.key,
    kind: row.kind,
    apiType: row.apiType,
    model: row.model,
    request: row.request,
    response: row.response,
    usage:
      row.promptTokens === null
        ? null
        : { promptTokens: row.promptTokens, completionTokens: row.completionTokens ?? 0, totalTokens: row.totalTokens ?? row.promptTokens },
    costUsd: usdOrNull(row.costUsd),
    createdAt: new Date(row.createdAt),
    expiresAt: row.expiresAt === null ? null : new Date(row.expiresAt),
    createdByCallId: row.createdByCallId,
    tenant: row.tenant,
    apiKeyId: row.apiKeyId,
    requestedAt: new Date(row.createdAt),
  };
}

export function entryRow(entry: CacheEntryValue) {
  return {
    key: entry.key,
    keyVersion: cacheKeyVersion,
    kind: entry.kind,
    apiType: entry.apiType,
    model: entry.model,
    request: entry.request,
    response: entry.response,
    promptTokens: entry.usage?.promptTokens ?? null,
    completionTokens: entry.usage?.completionTokens ?? null,
    totalTokens: entry.usage?.totalTokens ?? null,
    costUsd: entry.costUsd,
    hitCount: 0,
    createdAt: entry.createdAt,
    lastHitAt: null as string | null,
    expiresAt: entry.expiresAt,
    createdByCallId: entry.createdByCallId,
    tenant: entry.tenant,
    apiKeyId: entry.apiKeyId,
    requestedAt: entry.requestedAt,
  };
}

/**
 * The CTEs of the batch statement that write cache entries ($1: entryRow JSON texts; upserted;
 * `written_entries` returns the keys written) and hits ($2: { key, count, lastHitAt }).
 */
export const cacheEntryWrites = `entry_rows AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS r("key" text, "keyVersion" int, "kind" "CallKind", "apiType" text, "model" text,
    "request" jsonb, "response" jsonb, "promptTokens" int, "completionTokens" int, "totalTokens" int, "costUsd" numeric,
    "hitCount" int, "createdAt" timestamptz, "lastHitAt" timestamptz, "expiresAt" timestamptz, "createdByCallId" uuid, "tenant" text, "apiKeyId" uuid,
    "requestedAt" timestamptz)
), written_entries AS (
  INSERT INTO "CacheEntry" ("key", "keyVersion", "kind", "apiType", "model", "request", "response", "promptTokens", "completionTokens",
    "totalTokens", "costUsd", "hitCount", "createdAt", "lastHitAt", "expiresAt", "createdByCallId", "tenant", "apiKeyId")
  SELECT r."key", r."keyVersion", r."kind", r."apiType", r."model", r."request", r."response", r."promptTokens", r."completionTokens",
    r."totalTokens", r."costUsd", r."hitCount", r."createdAt", r."lastHitAt", r."expiresAt", r."createdByCallId", r."tenant", r."apiKeyId"
  FROM entry_rows r
  -- The tombstone: an answer requested before an invalidation of its tenant would bring back what it deleted.
  WHERE NOT EXISTS (SELECT 1 FROM "CacheInvalidation" i WHERE i."at" >= r."requestedAt" AND (i."tenant" IS NULL OR i."tenant" = r."tenant"))
  ON CONFLICT ("key") DO UPDATE SET "keyVersion" = EXCLUDED."keyVersion", "kind" = EXCLUDED."kind", "apiType" = EXCLUDED."apiType",
    "model" = EXCLUDED."model", "request" = EXCLUDED."request", "response" = EXCLUDED."response", "promptTokens" = EXCLUDED."promptTokens",
    "completionTokens" = EXCLUDED."completionTokens", "totalTokens" = EXCLUDED."totalTokens", "costUsd" = EXCLUDED."costUsd",
    "hitCount" = EXCLUDED."hitCount", "createdAt" = EXCLUDED."createdAt", "lastHitAt" = EXCLUDED."lastHitAt",
    "expiresAt" = EXCLUDED."expiresAt", "createdByCallId" = EXCLUDED."createdByCallId", "tenant" = EXCLUDED."tenant", "apiKeyId" = EXCLUDED."apiKeyId"
  RETURNING "key"
), counted_hits AS (
  UPDATE "CacheEntry" e SET "hitCount" = e."hitCount" + h."count", "lastHitAt" = GREATEST(e."lastHitAt", h."lastHitAt")
  FROM jsonb_to_recordset($2::jsonb) AS h("key" text, "count" int, "lastHitAt" timestamptz)
  WHERE e."key" = h."key"
  RETURNING 1
`;
