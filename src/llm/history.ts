import type { PrismaClient } from '../db/generated/client.ts';
import type { Logger } from '../logger.ts';
import type { CacheEntryValue, CacheStatus, CallKind } from './cache.ts';

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
  /** Stops the timer and writes everything pending, retrying for up to `closeTimeoutMs`. */
  close(): Promise<void>;
  pendingCount(): number;
}

export interface HistoryWriterOptions {
  prisma: PrismaClient;
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

const jsonOrUndefined = (value: unknown) => (value === null || value === undefined ? undefined : (value as object));

/** Postgres stores no NUL character in text or jsonb; one in a prompt would fail its whole batch at every retry. */
function storable<T>(value: T): T {
  if (typeof value === 'string') return (value.includes('\u0000') ? value.replaceAll('\u0000', '\uFFFD') : value) as T;
  if (Array.isArray(value)) return value.map(storable) as T;
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [storable(key), storable(inner)])) as T;
  }
  return value;
}

function estimateSafely(estimate: NonNullable<HistoryWriterOptions['estimatePromptTokens']>, call: CallRecord, prompt: unknown): number | null {
  try {
    return estimate(call, prompt);
  } catch {
    // A prompt the estimator cannot read (a failed call's malformed input) must not block the history.
    return null;
  }
}

export function createHistoryWriter(options: HistoryWriterOptions): HistoryWriter {
  const { prisma, logger } = options;
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
      await prisma.$transaction([
        // Entries first: a hit recorded in this batch may be on an entry written in it.
        ...entryBatch.map((entry) => {
          const data = storable({
            keyVersion: 1,
            kind: entry.kind,
            apiType: entry.apiType,
            model: entry.model,
            request: entry.request as object,
            response: entry.response as object,
            promptTokens: entry.usage?.promptTokens ?? null,
            completionTokens: entry.usage?.completionTokens ?? null,
            totalTokens: entry.usage?.totalTokens ?? null,
            costUsd: entry.costUsd,
            createdAt: entry.createdAt,
            expiresAt: entry.expiresAt,
            createdByCallId: entry.createdByCallId,
          });
          return prisma.cacheEntry.upsert({ where: { key: entry.key }, create: { key: entry.key, ...data }, update: { ...data, hitCount: 0, lastHitAt: null } });
        }),
        ...hitBatch.map(([key, hit]) =>
          prisma.cacheEntry.updateMany({ where: { key }, data: { hitCount: { increment: hit.count }, lastHitAt: hit.lastHitAt } }),
        ),
        prisma.llmCall.createMany({
          data: batch.map(({ call }) => storable({
            id: call.id,
            createdAt: call.createdAt,
            kind: call.kind,
            apiType: call.apiType,
            model: call.model,
            status: call.status,
            cacheStatus: call.cacheStatus,
            cacheKey: call.cacheKey,
            errorCode: call.errorCode,
            errorMessage: call.errorMessage,
            attemptCount: call.attemptCount,
            latencyMs: call.latencyMs,
            promptTokens: call.promptTokens,
            completionTokens: call.completionTokens,
            totalTokens: call.totalTokens,
            estimatedPromptTokens: call.estimatedPromptTokens,
            costUsd: call.costUsd,
            templateName: call.templateName,
            templateHash: call.templateHash,
            tags: call.tags,
          })),
          skipDuplicates: true,
        }),
        prisma.llmCallBody.createMany({
          data: batch
            .filter(({ call }) => call.metadata !== null || call.requestBody !== null || call.responseBody !== null)
            .map(({ call }) =>
              storable({
                callId: call.id,
                metadata: jsonOrUndefined(call.metadata),
                requestBody: jsonOrUndefined(call.requestBody),
                responseBody: jsonOrUndefined(call.responseBody),
              }),
            ),
          skipDuplicates: true,
        }),
        prisma.llmAttempt.createMany({
          data: batch.flatMap(({ call }) => call.attempts.map((attempt) => storable({ callId: call.id, ...attempt }))),
          skipDuplicates: true,
        }),
      ]);
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
      if (pendingCount() > 0) logger.error({ lost: pendingCount() }, 'history rows could not be written before shutdown');
    },
    pendingCount,
  };
}
