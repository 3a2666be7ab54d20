import { v7 as uuidv7 } from 'uuid';
import type { Database } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { cacheKeyVersion, type CacheEntryValue, type CacheStatus, type CallKind } from './cache.ts';

/** One upstream attempt of a call, as the audit keeps it. */
export interface AttemptRow {
  number: number;
  startedAt: Date;
  latencyMs: number;
  httpStatus: number | null;
  errorCode: string | null;
  errorMessage: string | null;
  /** The wait after this attempt before the next one. */
  waitMs: number | null;
  requestId: string | null;
}

/** One logical call, as the audit keeps it (the LlmCall row and its LlmAttempt rows). */
export interface CallRecord {
  id: string;
  createdAt: Date;
  tenant: string;
  /** The API key that made the call; null for the master key and open mode. */
  apiKeyId: string | null;
  /** For a hit: the call that filled the entry that served it. */
  servedByCallId: string | null;
  kind: CallKind;
  apiType: string;
  model: string;
  status: 'SUCCESS' | 'ERROR';
  cacheStatus: CacheStatus;
  cacheKey: string | null;
  errorCode: string | null;
  errorMessage: string | null;
  attemptCount: number;
  latencyMs: number;
  promptTokens: number | null;
  completionTokens: number | null;
  totalTokens: number | null;
  /** Our own count of the prompt; filled in off the caller's path when null. */
  estimatedPromptTokens: number | null;
  costUsd: number | null;
  templateName: string | null;
  templateHash: string | null;
  tags: string[];
  metadata: unknown;
  requestBody: unknown;
  responseBody: unknown;
  attempts: AttemptRow[];
}

/**
 * Writes the history and the cache behind the caller's back: nothing waits on the database to get
 * its answer, rows go in batches (one transaction each), a failed write is retried and logged, and
 * close() writes whatever is still pending.
 */
export interface HistoryWriter {
  /** `prompt` (messages or texts) is kept only to estimate the prompt tokens off the caller's path. */
  recordCall(call: CallRecord, prompt?: unknown): void;
  saveCacheEntry(entry: CacheEntryValue): void;
  recordCacheHit(key: string, at: Date): void;
  /** Writes what is pending now (and waits for a write already running). */
  flush(): Promise<void>;
  /** Stops the timer and writes everything pending, retrying for up to `closeTimeoutMs`; `lost` counts what could not be written. */
  close(): Promise<{ lost: number }>;
}

export interface HistoryWriterOptions {
  database: Pick<Database, 'query'>;
  logger: Logger;
  /** @default 200 */
  batchSize?: number;
  /** @default 50 */
  flushIntervalMs?: number;
  /** Fills `estimatedPromptTokens` of a call before it is written. */
  estimatePromptTokens?: (call: CallRecord, prompt: unknown) => number | null;
  /** @default 10000 */
  closeTimeoutMs?: number;
}

/**
 * JSON for Postgres, which stores no NUL character in text or jsonb: one in a prompt would fail its
 * whole batch at every retry. A NUL can only appear escaped in JSON text, as \u0000 after an even
 * run of backslashes (an odd run would be an escaped backslash followed by the letters), so it is
 * replaced there rather than by walking every value.
 */
function storableJson(value: unknown): string {
  const json = JSON.stringify(value);
  return json.includes('\\u0000') ? json.replace(/(?<!\\)((?:\\\\)*)\\u0000/g, '$1\\ufffd') : json;
}

function estimateSafely(estimate: NonNullable<HistoryWriterOptions['estimatePromptTokens']>, call: CallRecord, prompt: unknown): number | null {
  try {
    return estimate(call, prompt);
  } catch {
    // A prompt the estimator cannot read (a failed call's malformed input) must not block the history.
    return null;
  }
}

/**
 * One statement writes a whole batch, atomically and in one round trip: cache entries (upserted),
 * hit counts, calls, their bodies and their attempts, each table's rows passed as one JSON array.
 * Attempts may reference calls inserted by the same statement: foreign keys are checked at its end.
 */
const writeBatchSql = `
WITH entry_rows AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS r("key" text, "keyVersion" int, "kind" "CallKind", "apiType" text, "model" text,
    "request" jsonb, "response" jsonb, "promptTokens" int, "completionTokens" int, "totalTokens" int, "costUsd" float8,
    "hitCount" int, "createdAt" timestamptz, "lastHitAt" timestamptz, "expiresAt" timestamptz, "createdByCallId" uuid, "tenant" text, "apiKeyId" uuid)
), written_entries AS (
  INSERT INTO "CacheEntry" ("key", "keyVersion", "kind", "apiType", "model", "request", "response", "promptTokens", "completionTokens",
    "totalTokens", "costUsd", "hitCount", "createdAt", "lastHitAt", "expiresAt", "createdByCallId", "tenant", "apiKeyId")
  SELECT * FROM entry_rows
  ON CONFLICT ("key") DO UPDATE SET "keyVersion" = EXCLUDED."keyVersion", "kind" = EXCLUDED."kind", "apiType" = EXCLUDED."apiType",
    "model" = EXCLUDED."model", "request" = EXCLUDED."request", "response" = EXCLUDED."response", "promptTokens" = EXCLUDED."promptTokens",
    "completionTokens" = EXCLUDED."completionTokens", "totalTokens" = EXCLUDED."totalTokens", "costUsd" = EXCLUDED."costUsd",
    "hitCount" = EXCLUDED."hitCount", "createdAt" = EXCLUDED."createdAt", "lastHitAt" = EXCLUDED."lastHitAt",
    "expiresAt" = EXCLUDED."expiresAt", "createdByCallId" = EXCLUDED."createdByCallId", "tenant" = EXCLUDED."tenant", "apiKeyId" = EXCLUDED."apiKeyId"
  RETURNING 1
), counted_hits AS (
  UPDATE "CacheEntry" e SET "hitCount" = e."hitCount" + h."count", "lastHitAt" = GREATEST(e."lastHitAt", h."lastHitAt")
  FROM jsonb_to_recordset($2::jsonb) AS h("key" text, "count" int, "lastHitAt" timestamptz)
  WHERE e."key" = h."key"
  RETURNING 1
), written_calls AS (
  INSERT INTO "LlmCall" ("id", "createdAt", "tenant", "apiKeyId", "servedByCallId", "kind", "apiType", "model", "status", "cacheStatus", "cacheKey",
    "errorCode", "errorMessage", "attemptCount", "latencyMs", "promptTokens", "completionTokens", "totalTokens", "estimatedPromptTokens", "costUsd",
    "templateName", "templateHash", "tags")
  SELECT * FROM jsonb_to_recordset($3::jsonb) AS c("id" uuid, "createdAt" timestamptz, "tenant" text, "apiKeyId" uuid, "servedByCallId" uuid,
    "kind" "CallKind", "apiType" text, "model" text,
    "status" "CallStatus", "cacheStatus" "CacheStatus", "cacheKey" text, "errorCode" text, "errorMessage" text, "attemptCount" int,
    "latencyMs" float8, "promptTokens" int, "completionTokens" int, "totalTokens" int, "estimatedPromptTokens" int, "costUsd" float8,
    "templateName" text, "templateHash" text, "tags" text[])
  ON CONFLICT DO NOTHING
  RETURNING 1
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
)
SELECT (SELECT count(*) FROM written_calls) AS "calls"`;

export function createHistoryWriter(options: HistoryWriterOptions): HistoryWriter {
  const { database, logger } = options;
  const batchSize = options.batchSize ?? 200;
  const flushIntervalMs = options.flushIntervalMs ?? 50;
  const calls: { call: CallRecord; prompt: unknown }[] = [];
  const entries = new Map<string, CacheEntryValue>();
  const hits = new Map<string, { count: number; lastHitAt: Date }>();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let failures = 0;
  let closed = false;

  const pendingCount = () => calls.length + entries.size + hits.size;
  const schedule = (delayMs: number) => {
    if (timer || closed) return;
    timer = setTimeout(() => {
      timer = undefined;
      void flush();
    }, delayMs);
  };

  async function writeBatch(): Promise<void> {
    const batch = calls.splice(0, batchSize);
    const entryBatch = [...entries.values()];
    entries.clear();
    const hitBatch = [...hits];
    hits.clear();
    try {
      for (const item of batch) {
        if (item.call.estimatedPromptTokens === null && options.estimatePromptTokens) {
          item.call.estimatedPromptTokens = estimateSafely(options.estimatePromptTokens, item.call, item.prompt);
        }
      }
      // Hits on an entry written in this batch go into its row: one statement cannot touch a row twice.
      const hitsByKey = new Map(hitBatch);
      const entryRows = entryBatch.map((entry) => {
        const pendingHit = hitsByKey.get(entry.key);
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
          hitCount: pendingHit?.count ?? 0,
          createdAt: entry.createdAt,
          lastHitAt: pendingHit?.lastHitAt ?? null,
          expiresAt: entry.expiresAt,
          createdByCallId: entry.createdByCallId,
          tenant: entry.tenant,
          apiKeyId: entry.apiKeyId,
        };
      });
      const entryKeys = new Set(entryBatch.map((entry) => entry.key));
      const hitRows = hitBatch.filter(([key]) => !entryKeys.has(key)).map(([key, hit]) => ({ key, ...hit }));
      const callRows = batch.map(({ call }) => {
        const { attempts: _attempts, metadata: _metadata, requestBody: _requestBody, responseBody: _responseBody, ...row } = call;
        return row;
      });
      const bodyRows = batch
        .filter(({ call }) => call.metadata !== null || call.requestBody !== null || call.responseBody !== null)
        .map(({ call }) => ({ callId: call.id, metadata: call.metadata, requestBody: call.requestBody, responseBody: call.responseBody }));
      const attemptRows = batch.flatMap(({ call }) => call.attempts.map((attempt) => ({ id: uuidv7(), callId: call.id, tenant: call.tenant, apiKeyId: call.apiKeyId, ...attempt })));
      await database.query(writeBatchSql, [entryRows, hitRows, callRows, bodyRows, attemptRows].map(storableJson));
      failures = 0;
    } catch (error) {
      // Put everything back in front, newer hits and entries winning over the failed batch's.
      calls.unshift(...batch);
      for (const entry of entryBatch) if (!entries.has(entry.key)) entries.set(entry.key, entry);
      for (const [key, hit] of hitBatch) {
        const newer = hits.get(key);
        hits.set(key, newer ? { count: newer.count + hit.count, lastHitAt: newer.lastHitAt } : hit);
      }
      failures += 1;
      logger.error({ err: error, pending: pendingCount(), failures }, 'history write failed; it will be retried');
      throw error;
    }
  }

  function flush(): Promise<void> {
    // The clean-up runs after the promise is stored: an empty flush completes synchronously,
    // and a `finally` inside the body would clear `running` before it was ever set.
    running ??= (async () => {
      try {
        while (pendingCount() > 0) await writeBatch();
      } catch {
        schedule(Math.min(5000, flushIntervalMs * 2 ** failures));
      }
    })().finally(() => {
      running = undefined;
    });
    return running;
  }

  const enqueued = () => {
    if (calls.length >= batchSize) void flush();
    else schedule(flushIntervalMs);
  };

  return {
    recordCall(call, prompt?: unknown) {
      calls.push({ call, prompt });
      enqueued();
    },
    saveCacheEntry(entry) {
      entries.set(entry.key, entry);
      enqueued();
    },
    recordCacheHit(key, at) {
      const hit = hits.get(key);
      hits.set(key, { count: (hit?.count ?? 0) + 1, lastHitAt: at });
      enqueued();
    },
    flush,
    async close() {
      closed = true;
      clearTimeout(timer);
      timer = undefined;
      const deadline = Date.now() + (options.closeTimeoutMs ?? 10_000);
      while (pendingCount() > 0 && Date.now() < deadline) {
        await flush();
        if (pendingCount() > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** failures)));
      }
      const lost = pendingCount();
      if (lost > 0) logger.error({ lost }, 'history rows could not be written before shutdown');
      return { lost };
    },
  };
}
