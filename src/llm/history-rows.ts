import { newId } from '../ids.ts';
import { parseDecimal } from '../money.ts';
import { cacheEntryWrites } from './cache-rows.ts';
import type { CallRecord } from './history.ts';

/**
 * JSON text Postgres stores: it refuses a NUL (\u0000) in text and jsonb, and an unpaired UTF-16
 * surrogate escape (\ud800-\udfff); either would fail a whole batch at every retry. Both are
 * replaced by U+FFFD. Of the \u escapes JSON.stringify writes (control characters and lone
 * surrogates; a valid pair is written as the character itself), these are the only ones Postgres
 * refuses. An escape counts only after an even run of backslashes (an odd run is an escaped
 * backslash followed by the letters). Throws on a value JSON.stringify cannot write (nested too
 * deep, too long, a BigInt).
 */
export function storableJson(value: unknown): string {
  const json = JSON.stringify(value) ?? 'null';
  return json.includes('\\u') ? json.replace(/(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi, '$1\\ufffd') : json;
}

/** A row ready for the database and the spool: each table's row as storable JSON text. */
export type PreparedRow =
  | { kind: 'call'; id: string; call: string; body: string | null; attempts: string[] }
  | { kind: 'entry'; key: string; entry: string }
  | { kind: 'hit'; key: string; count: number; lastHitAt: string };

/** Why a row was stored reduced or dropped, as its note says. */
export function reasonOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return clip(`${message}${typeof code === 'string' ? ` (${code})` : ''}`, 500)!;
}

function clip(value: unknown, length: number): string | null {
  return typeof value === 'string' ? value.slice(0, length) : null;
}

const int32 = (value: unknown) => (Number.isInteger(value) && Math.abs(value as number) < 2 ** 31 ? (value as number) : null);
// USD travels as a decimal string (JSON text of the numeric parameter); a number (a row spooled by an older version) as itself.
const usdText = (value: unknown) => (typeof value === 'string' && parseDecimal(value) !== null ? value : finite(value));
const finite = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) ? value : null);

/**
 * A call row that Postgres takes whatever the original held: short plain fields, no attempts, and
 * a note instead of the bodies and the metadata. Cutting a string may split a surrogate pair:
 * storableJson repairs that.
 */
export function reducedCall(row: Record<string, unknown>, reason: string): PreparedRow {
  const id = String(row.id);
  const createdAt = new Date(row.createdAt as string);
  const note = { unstorable: reason };
  const reduced = {
    id,
    createdAt: Number.isNaN(createdAt.getTime()) ? new Date() : createdAt,
    tenant: clip(row.tenant, 100) ?? 'default',
    apiKeyId: row.apiKeyId,
    servedByCallId: row.servedByCallId,
    kind: row.kind,
    apiType: clip(row.apiType, 200) ?? 'unknown',
    model: clip(row.model, 200) ?? 'unknown',
    status: row.status,
    cacheStatus: row.cacheStatus,
    cacheKey: clip(row.cacheKey, 200),
    errorCode: clip(row.errorCode, 100),
    errorMessage: clip(row.errorMessage, 1000),
    attemptCount: int32(row.attemptCount) ?? 0,
    latencyMs: finite(row.latencyMs) ?? 0,
    streamed: row.streamed === true,
    timeToFirstTokenMs: finite(row.timeToFirstTokenMs),
    promptTokens: int32(row.promptTokens),
    completionTokens: int32(row.completionTokens),
    totalTokens: int32(row.totalTokens),
    estimatedPromptTokens: int32(row.estimatedPromptTokens),
    costUsd: usdText(row.costUsd),
    costSavedUsd: usdText(row.costSavedUsd),
    templateName: clip(row.templateName, 200),
    templateHash: clip(row.templateHash, 200),
    tags: Array.isArray(row.tags) ? row.tags.filter((tag): tag is string => typeof tag === 'string').slice(0, 50).map((tag) => tag.slice(0, 200)) : [],
  };
  return {
    kind: 'call',
    id,
    call: storableJson(reduced),
    body: storableJson({ callId: id, metadata: note, requestBody: note, responseBody: note }),
    attempts: [],
  };
}

export function prepareCall(call: CallRecord): PreparedRow {
  const { attempts, metadata, requestBody, responseBody, ...row } = call;
  let callText: string;
  try {
    callText = storableJson(row);
  } catch (error) {
    return reducedCall(row, `could not be serialised: ${reasonOf(error)}`);
  }
  try {
    const body = metadata !== null || requestBody !== null || responseBody !== null ? storableJson({ callId: call.id, metadata, requestBody, responseBody }) : null;
    // Ids given now, so that a row written twice (replayed from the spool) is stored once.
    const attemptTexts = attempts.map((attempt) => storableJson({ id: newId(), callId: call.id, tenant: call.tenant, apiKeyId: call.apiKeyId, ...attempt }));
    return { kind: 'call', id: call.id, call: callText, body, attempts: attemptTexts };
  } catch (error) {
    return reducedCall(row, `could not be serialised: ${reasonOf(error)}`);
  }
}

/** The five parameters of writeBatchSql for some rows, in order: later entries win, hits add up. */
export function statementParameters(rows: readonly PreparedRow[]): string[] {
  const entries = new Map<string, string>();
  const hits = new Map<string, { count: number; lastHitAt: string }>();
  const calls: string[] = [];
  const bodies: string[] = [];
  const attempts: string[] = [];
  for (const row of rows) {
    if (row.kind === 'entry') entries.set(row.key, row.entry);
    else if (row.kind === 'hit') {
      const hit = hits.get(row.key);
      hits.set(row.key, { count: (hit?.count ?? 0) + row.count, lastHitAt: hit && hit.lastHitAt > row.lastHitAt ? hit.lastHitAt : row.lastHitAt });
    } else {
      calls.push(row.call);
      if (row.body !== null) bodies.push(row.body);
      attempts.push(...row.attempts);
    }
  }
  // Hits on an entry written by the same statement go into its row: one statement cannot touch a row twice.
  for (const [key, hit] of hits) {
    const entry = entries.get(key);
    if (entry === undefined) continue;
    entries.set(key, JSON.stringify({ ...(JSON.parse(entry) as object), hitCount: hit.count, lastHitAt: hit.lastHitAt }));
    hits.delete(key);
  }
  const hitTexts = [...hits].map(([key, hit]) => storableJson({ key, ...hit }));
  return [[...entries.values()], hitTexts, calls, bodies, attempts].map((texts) => `[${texts.join(',')}]`);
}

/**
 * The channel on which every instance hears of the calls just written (each LISTENs once): one
 * notification per tenant and up to `callsPerNotification` calls, `{"tenant": "...", "ids": ["...", ...]}`.
 */
export const callRecordedChannel = 'callboard_call_recorded';
/** 100 ids and a tenant of up to 100 characters take about 4,000 bytes: well within NOTIFY's 8,000. */
export const callsPerNotification = 100;

/**
 * The channel on which every instance hears of the cache entries just written (each LISTENs once,
 * for its presence filter: see ResponseCache.written): a JSON array of up to `keysPerNotification`
 * keys per notification.
 */
export const cacheEntryWrittenChannel = 'callboard_cache_entry_written';
/** 100 keys of 64 characters take about 6,700 bytes: within NOTIFY's 8,000. */
export const keysPerNotification = 100;

/**
 * One statement writes a whole batch, atomically and in one round trip: cache entries (upserted),
 * hit counts, calls, their bodies and their attempts, each table's rows passed as one JSON array.
 * Attempts may reference calls inserted by the same statement: foreign keys are checked at its end.
 * It also announces the calls it inserted on `callRecordedChannel`, and the cache entries it wrote
 * on `cacheEntryWrittenChannel`: Postgres delivers a NOTIFY only when its transaction commits, so
 * listeners hear of committed rows only, and of a call replayed from the spool (ON CONFLICT DO
 * NOTHING) once.
 */
export const writeBatchSql = `
WITH ${cacheEntryWrites}), written_calls AS (
  INSERT INTO "LlmCall" ("id", "createdAt", "tenant", "apiKeyId", "servedByCallId", "kind", "apiType", "model", "status", "cacheStatus", "cacheKey",
    "errorCode", "errorMessage", "attemptCount", "latencyMs", "streamed", "timeToFirstTokenMs", "promptTokens", "completionTokens", "totalTokens",
    "estimatedPromptTokens", "costUsd", "costSavedUsd", "templateName", "templateHash", "tags")
  -- A row spooled by an older version has no "streamed": it was not a stream.
  SELECT "id", "createdAt", "tenant", "apiKeyId", "servedByCallId", "kind", "apiType", "model", "status", "cacheStatus", "cacheKey",
    "errorCode", "errorMessage", "attemptCount", "latencyMs", COALESCE("streamed", false), "timeToFirstTokenMs", "promptTokens", "completionTokens", "totalTokens",
    "estimatedPromptTokens", "costUsd", "costSavedUsd", "templateName", "templateHash", "tags"
  FROM jsonb_to_recordset($3::jsonb) AS c("id" uuid, "createdAt" timestamptz, "tenant" text, "apiKeyId" uuid, "servedByCallId" uuid,
    "kind" "CallKind", "apiType" text, "model" text,
    "status" "CallStatus", "cacheStatus" "CacheStatus", "cacheKey" text, "errorCode" text, "errorMessage" text, "attemptCount" int,
    "latencyMs" float8, "streamed" boolean, "timeToFirstTokenMs" float8, "promptTokens" int, "completionTokens" int, "totalTokens" int,
    "estimatedPromptTokens" int, "costUsd" numeric, "costSavedUsd" numeric, "templateName" text, "templateHash" text, "tags" text[])
  ON CONFLICT DO NOTHING
  RETURNING "id", "tenant"
), written_bodies AS (
  INSERT INTO "LlmCallBody" ("callId", "metadata", "requestBody", "responseBody")
  SELECT * FROM jsonb_to_recordset($4::jsonb) AS b("callId" uuid, "metadata" jsonb, "requestBody" jsonb, "responseBody" jsonb)
  ON CONFLICT DO NOTHING
  RETURNING 1
), written_attempts AS (
  INSERT INTO "LlmAttempt" ("id", "callId", "tenant", "apiKeyId", "number", "startedAt", "latencyMs", "httpStatus", "errorCode", "errorMessage", "waitMs", "requestId")
  SELECT * FROM jsonb_to_recordset($5::jsonb) AS a("id" uuid, "callId" uuid, "tenant" text, "apiKeyId" uuid, "number" int, "startedAt" timestamptz, "latencyMs" float8,
    "httpStatus" int, "errorCode" text, "errorMessage" text, "waitMs" int, "requestId" text)
  ON CONFLICT DO NOTHING
  RETURNING 1
), notified AS (
  -- Counted below: a CTE that is not read is never run.
  SELECT pg_notify('${callRecordedChannel}', json_build_object('tenant', w."tenant", 'ids', array_agg(w."id"))::text)
  FROM (SELECT "id", "tenant", (row_number() OVER (PARTITION BY "tenant" ORDER BY "id") - 1) / ${callsPerNotification} AS "part" FROM written_calls) w
  GROUP BY w."tenant", w."part"
), entries_notified AS (
  SELECT pg_notify('${cacheEntryWrittenChannel}', json_agg(w."key")::text)
  FROM (SELECT "key", (row_number() OVER (ORDER BY "key") - 1) / ${keysPerNotification} AS "part" FROM written_entries) w
  GROUP BY w."part"
)
SELECT (SELECT count(*) FROM written_calls) AS "calls", (SELECT count(*) FROM notified) AS "notifications",
  (SELECT count(*) FROM entries_notified) AS "entryNotifications"`;

