import { readdirSync } from 'node:fs';
import type { Database } from '../db/database.ts';
import { classifyDatabaseError, type DatabaseFailure } from '../db/database-errors.ts';
import type { Logger } from '../logger.ts';
import type { Usd } from '../money.ts';
import type { CacheEntryValue, CacheStatus, CallKind } from './cache.ts';
import { entryRow } from './cache-rows.ts';
import { prepareCall, reasonOf, reducedCall, statementParameters, storableJson, writeBatchSql, type PreparedRow } from './history-rows.ts';
import { openSpool, type Spool } from './spool.ts';

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
  /** The caller asked for a stream. */
  streamed: boolean;
  /** For a stream: milliseconds from the call's start to its first chunk sent to the caller. */
  timeToFirstTokenMs: number | null;
  promptTokens: number | null;
  completionTokens: number | null;
  totalTokens: number | null;
  /** Our own count of the prompt; filled in off the caller's path when null. */
  estimatedPromptTokens: number | null;
  /** USD spent, exact (a decimal string): 0 for a cache hit; null when the model has no price. */
  costUsd: Usd | null;
  /** For a cache hit: what its answer cost when it was produced (USD saved); null otherwise. */
  costSavedUsd: Usd | null;
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
 * its answer. Rows go in batches (one statement each). A batch the database refuses is split until
 * the bad row is found, and that row is stored in a reduced form with a note of why, so it never
 * holds up the rows behind it. While the database cannot be reached, or when more than
 * `maxPendingRows` wait, rows go to a spool on local disk (synced every flush interval) and are
 * written from it, in order, once the database answers again; a spool left by a crash is written
 * on start-up.
 */
export interface HistoryWriter {
  /** `prompt` (messages or texts) is kept only to estimate the prompt tokens off the caller's path. */
  recordCall(call: CallRecord, prompt?: unknown): void;
  saveCacheEntry(entry: CacheEntryValue): void;
  recordCacheHit(key: string, at: Date): void;
  /** Writes what is pending now, the spool included (and waits for a write already running). */
  flush(): Promise<void>;
  /** What the writer holds and has done so far, for GET /metrics; reading it changes nothing. */
  stats(): HistoryStats;
  /**
   * Stops the timers and writes everything pending, for up to `closeTimeoutMs`; what the database
   * does not take by then stays in the spool for the next start.
   */
  close(): Promise<{ lost: number }>;
}

/** The history writer's state and work so far (counts since the process started). */
export interface HistoryStats {
  /** Rows (calls, cache entries, cache hits) in memory not yet written, a batch being written included. */
  memoryRows: number;
  /** Rows in the spool not yet written. */
  spoolRows: number;
  /** Bytes of the spool's files on disk. */
  spoolBytes: number;
  /** Milliseconds since the oldest row not yet written was queued (for the spool: since it last began to hold rows); 0 when none. */
  oldestPendingMs: number;
  /** Rows the database took, reduced ones included. */
  rowsWritten: number;
  /** Writes that failed (each is retried later): a database down or refusing the statement. */
  writeFailures: number;
  /** Rows lost: refused even reduced, unreadable in the spool, or past the memory bound with no spool. */
  rowsDropped: number;
}

export interface HistoryWriterOptions {
  database: Pick<Database, 'query'>;
  logger: Logger;
  /** The spool's folder (created when first needed). One process owns it. */
  spoolDir: string;
  /** Rows kept in memory before the rest goes to the spool. @default 10000 */
  maxPendingRows?: number;
  /** @default 200 */
  batchSize?: number;
  /** @default 50 */
  flushIntervalMs?: number;
  /** Fills `estimatedPromptTokens` of a call before it is written. */
  estimatePromptTokens?: (call: CallRecord, prompt: unknown) => number | null;
  /** @default 10000 */
  closeTimeoutMs?: number;
  /** The longest wait between two attempts to reach a database that is down. @default 1000 */
  maxRetryDelayMs?: number;
}

function estimateSafely(estimate: NonNullable<HistoryWriterOptions['estimatePromptTokens']>, call: CallRecord, prompt: unknown): number | null {
  try {
    return estimate(call, prompt);
  } catch {
    // A prompt the estimator cannot read (a failed call's malformed input) must not block the history.
    return null;
  }
}

/** `queuedAt`: Date.now() when the row was queued, for the write lag. */
type Queued =
  | { kind: 'call'; call: CallRecord; prompt: unknown; queuedAt: number }
  | { kind: 'entry'; entry: CacheEntryValue; queuedAt: number }
  | { kind: 'hit'; key: string; count: number; lastHitAt: Date; queuedAt: number };

/** Thrown when the database cannot take rows now: the caller keeps them (spool) and retries later. */
class DatabaseDownError extends Error {
  constructor(readonly failure: DatabaseFailure, readonly original: unknown) {
    super(reasonOf(original));
  }
}

export function createHistoryWriter(options: HistoryWriterOptions): HistoryWriter {
  const { database, logger } = options;
  const batchSize = options.batchSize ?? 200;
  const flushIntervalMs = options.flushIntervalMs ?? 50;
  const maxPendingRows = options.maxPendingRows ?? 10_000;
  const maxRetryDelayMs = options.maxRetryDelayMs ?? 1000;
  /** Rows for the database, oldest first; empty whenever the spool holds rows (they are older). */
  const queue: Queued[] = [];
  /** Rows for the spool, written and synced every flush interval. */
  let toSpool: Queued[] = [];
  /** Hits not yet prepared, by key: repeated hits add to one row. */
  const openHits = new Map<string, Queued & { kind: 'hit' }>();
  // A spool left by an earlier process holds older rows: until it is written, new rows queue behind it.
  let spooling = hasSpooledRows(options.spoolDir);
  let spool: Spool | null = null;
  const spoolOpening = openSpool(options.spoolDir).then(
    (opened) => {
      spool = opened;
      if (opened.size() > 0) {
        logger.info({ rows: opened.size(), dir: opened.dir }, 'history spool found: writing its rows first');
        // Whether or not a call comes: a restarted instance may see no traffic for a while.
        scheduleWrite(0);
      }
    },
    (error: unknown) => logger.error({ err: error, dir: options.spoolDir }, 'history spool cannot be opened: rows past the memory bound will be dropped'),
  );
  let writeTimer: NodeJS.Timeout | undefined;
  let spoolTimer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let closed = false;
  /** The current outage: when it began, failed attempts, and rows written since (logged once, at its end). */
  let outage: { since: number; failures: number; lastReport: number } | null = null;
  let spoolSyncFailing = false;
  let dropped = 0;
  let rowsWritten = 0;
  let writeFailures = 0;
  /** The batch taken from the queue while it is being written: still pending. */
  let writing: { rows: number; queuedAt: number } | null = null;

  const pendingCount = () => queue.length + toSpool.length + (spool?.size() ?? 0);

  const scheduleWrite = (delayMs: number) => {
    if (writeTimer || closed) return;
    writeTimer = setTimeout(() => {
      writeTimer = undefined;
      void flush();
    }, delayMs);
  };
  const scheduleSpoolSync = () => {
    if (spoolTimer || closed) return;
    spoolTimer = setTimeout(() => {
      spoolTimer = undefined;
      void syncSpool();
    }, flushIntervalMs);
  };

  function prepare(item: Queued): PreparedRow | null {
    if (item.kind === 'call') {
      if (item.call.estimatedPromptTokens === null && options.estimatePromptTokens) {
        item.call.estimatedPromptTokens = estimateSafely(options.estimatePromptTokens, item.call, item.prompt);
      }
      return prepareCall(item.call);
    }
    if (item.kind === 'hit') {
      if (openHits.get(item.key) === item) openHits.delete(item.key);
      return { kind: 'hit', key: item.key, count: item.count, lastHitAt: item.lastHitAt.toISOString() };
    }
    try {
      return { kind: 'entry', key: item.entry.key, entry: storableJson(entryRow(item.entry)) };
    } catch (error) {
      // A cache entry is only worth its whole answer: one that cannot be stored is not stored.
      logger.warn({ key: item.entry.key, reason: reasonOf(error) }, 'cache entry not stored: it cannot be serialised');
      return null;
    }
  }
  const prepareAll = (items: readonly Queued[]) => items.map(prepare).filter((row): row is PreparedRow => row !== null);

  /** Moves the rows waiting for the spool onto its disk, synced. Rows stay in memory while the disk fails. */
  async function syncSpool(): Promise<void> {
    await spoolOpening;
    if (!spool) {
      // No spool: memory is all there is, and it is bounded.
      const excess = toSpool.length - maxPendingRows;
      if (excess > 0) {
        dropped += excess;
        toSpool.splice(0, excess);
        logger.error({ dropped: excess }, 'history rows dropped: the database is unreachable and there is no spool');
      }
      return;
    }
    const moving = toSpool;
    toSpool = [];
    spool.append(moving.length > 0 ? prepareAll(moving).map((row) => JSON.stringify(row)) : []);
    try {
      await spool.sync();
      if (spoolSyncFailing) logger.info({ dir: spool.dir }, 'history spool writable again');
      spoolSyncFailing = false;
    } catch (error) {
      if (!spoolSyncFailing) logger.error({ err: error, dir: spool.dir }, 'history spool cannot be written; rows wait in memory');
      spoolSyncFailing = true;
      // The spool keeps its unsynced lines and retries them at the next sync.
      scheduleSpoolSync();
    }
  }

  async function writeStatement(rows: readonly PreparedRow[]): Promise<void> {
    await database.query(writeBatchSql, statementParameters(rows), { name: 'callboard_write_batch' });
    rowsWritten += rows.length;
  }

  /** Writes rows; a refused batch is split in two until each bad row is found and stored reduced. */
  async function writeRows(rows: readonly PreparedRow[]): Promise<void> {
    if (rows.length === 0) return;
    try {
      await writeStatement(rows);
      return;
    } catch (error) {
      const failure = classifyDatabaseError(error);
      if (failure !== 'data') throw new DatabaseDownError(failure, error);
      if (rows.length === 1) return writeReduced(rows[0]!, error);
      const half = Math.ceil(rows.length / 2);
      await writeRows(rows.slice(0, half));
      await writeRows(rows.slice(half));
    }
  }

  async function writeReduced(row: PreparedRow, error: unknown): Promise<void> {
    const reason = reasonOf(error);
    if (row.kind !== 'call') {
      logger.warn({ kind: row.kind, key: row.key, reason }, 'history row not stored: the database refused it');
      dropped += 1;
      return;
    }
    const reduced = reducedCall(JSON.parse(row.call) as Record<string, unknown>, `refused by the database: ${reason}`);
    try {
      await writeStatement([reduced]);
      logger.warn({ callId: row.id, reason }, 'history row stored without its bodies: the database refused it');
    } catch (reducedError) {
      const failure = classifyDatabaseError(reducedError);
      if (failure !== 'data') throw new DatabaseDownError(failure, reducedError);
      dropped += 1;
      logger.error({ callId: row.id, reason: reasonOf(reducedError) }, 'history row dropped: the database refused even its reduced form');
    }
  }

  function noteFailure(error: DatabaseDownError): void {
    const now = Date.now();
    if (!outage) {
      outage = { since: now, failures: 0, lastReport: now };
      logger.error(
        { err: error.original, failure: error.failure, pending: pendingCount(), spool: options.spoolDir },
        `history writes failing since ${new Date(now).toISOString()} (${error.failure === 'unreachable' ? 'the database is unreachable' : 'the database refuses the statement'}); rows go to the spool and are written when it answers`,
      );
    } else if (now - outage.lastReport >= 60_000) {
      outage.lastReport = now;
      logger.error({ failure: error.failure, pending: pendingCount(), failures: outage.failures }, `history writes still failing since ${new Date(outage.since).toISOString()}`);
    }
    outage.failures += 1;
  }

  let writtenInOutage = 0;
  function noteWritten(count: number): void {
    if (!outage) return;
    writtenInOutage += count;
    if (spooling) return;
    logger.info(
      { rows: writtenInOutage, outageSeconds: Math.round((Date.now() - outage.since) / 100) / 10, dropped },
      `history written: ${writtenInOutage} rows after an outage of ${((Date.now() - outage.since) / 1000).toFixed(1)} s`,
    );
    outage = null;
    writtenInOutage = 0;
  }

  /** From here on, rows go to the spool; `older` (already prepared) go before everything else. */
  async function startSpooling(older: readonly PreparedRow[]): Promise<void> {
    await spoolOpening;
    const lines = older.map((row) => JSON.stringify(row));
    if (spooling && spool) {
      // Rows went to the spool while this batch was being written: the batch is older than they are.
      try {
        await spool.prepend(lines);
      } catch (error) {
        dropped += lines.length;
        logger.error({ err: error, dropped: lines.length, dir: spool.dir }, 'history rows lost: the spool cannot be written');
      }
    } else if (spool) {
      spool.append(lines);
    }
    spooling = true;
    toSpool = [...queue.splice(0), ...toSpool];
    await syncSpool();
  }

  /** Writes the spool's segments, oldest first, each line once: progress is kept beside each segment. */
  async function writeFromSpool(current: Spool): Promise<void> {
    for (let segment = await current.oldest(); segment; segment = await current.oldest()) {
      let done = segment.done;
      while (done < segment.lines.length) {
        const lines = segment.lines.slice(done, done + batchSize);
        const rows: PreparedRow[] = [];
        for (const line of lines) {
          try {
            rows.push(JSON.parse(line) as PreparedRow);
          } catch {
            dropped += 1;
            logger.error({ segment: segment.name }, 'history spool line unreadable: skipped');
          }
        }
        await writeRows(rows);
        done += lines.length;
        if (done < segment.lines.length) await current.markDone(segment, done);
        noteWritten(rows.length);
      }
      await current.remove(segment.name);
    }
  }

  async function writePending(): Promise<void> {
    await spoolOpening;
    while (spooling) {
      await syncSpool();
      if (spool) await writeFromSpool(spool);
      else queue.unshift(...toSpool.splice(0));
      // Rows may have arrived while the last segment was written: they are older than any new one.
      if (toSpool.length === 0 && (spool?.size() ?? 0) === 0) {
        spooling = false;
        noteWritten(0);
      }
    }
    while (queue.length > 0) {
      const batch = queue.splice(0, batchSize);
      writing = { rows: batch.length, queuedAt: batch[0]!.queuedAt };
      const rows = prepareAll(batch);
      try {
        await writeRows(rows);
      } catch (error) {
        writing = null;
        if (error instanceof DatabaseDownError && spool) await startSpooling(rows);
        else queue.unshift(...batch);
        throw error;
      }
      writing = null;
      noteWritten(rows.length);
      // The memory bound was reached while this batch was written: the spool holds what came next.
      if (spooling) return writePending();
    }
  }

  function flush(): Promise<void> {
    // The clean-up runs after the promise is stored: an empty flush completes synchronously,
    // and a `finally` inside the body would clear `running` before it was ever set.
    running ??= (async () => {
      try {
        await writePending();
      } catch (error) {
        writeFailures += 1;
        if (!(error instanceof DatabaseDownError)) {
          logger.error({ err: error }, 'history write failed; it will be retried');
          outage ??= { since: Date.now(), failures: 0, lastReport: Date.now() };
        } else noteFailure(error);
        scheduleWrite(Math.min(maxRetryDelayMs, flushIntervalMs * 2 ** Math.min(outage?.failures ?? 1, 10)));
      }
    })().finally(() => {
      running = undefined;
    });
    return running;
  }

  const enqueue = (item: Queued) => {
    if (spooling) {
      toSpool.push(item);
      scheduleSpoolSync();
      if (!outage) scheduleWrite(flushIntervalMs);
      return;
    }
    if (queue.length >= maxPendingRows) {
      // The database is slower than the callers: the spool takes the rest, in order, behind these.
      spooling = true;
      toSpool = [...queue.splice(0), ...toSpool, item];
      scheduleSpoolSync();
      return;
    }
    queue.push(item);
    if (queue.length >= batchSize) void flush();
    else scheduleWrite(flushIntervalMs);
  };

  return {
    recordCall(call, prompt?: unknown) {
      enqueue({ kind: 'call', call, prompt, queuedAt: Date.now() });
    },
    saveCacheEntry(entry) {
      enqueue({ kind: 'entry', entry, queuedAt: Date.now() });
    },
    recordCacheHit(key, at) {
      const open = openHits.get(key);
      if (open) {
        open.count += 1;
        open.lastHitAt = at;
        return;
      }
      const hit = { kind: 'hit' as const, key, count: 1, lastHitAt: at, queuedAt: Date.now() };
      openHits.set(key, hit);
      enqueue(hit);
    },
    flush: async () => {
      await running;
      await flush();
    },
    stats() {
      const spoolRows = spool?.size() ?? 0;
      // The spool's rows are older than any in memory; in memory, the batch being written, then the queues' heads.
      const oldest = spoolRows > 0 ? spool?.heldSince() : (writing?.queuedAt ?? Math.min(queue[0]?.queuedAt ?? Infinity, toSpool[0]?.queuedAt ?? Infinity));
      return {
        memoryRows: queue.length + toSpool.length + (writing?.rows ?? 0),
        spoolRows,
        spoolBytes: spool?.bytes() ?? 0,
        oldestPendingMs: oldest === undefined || oldest === null || oldest === Infinity ? 0 : Math.max(0, Date.now() - oldest),
        rowsWritten,
        writeFailures,
        rowsDropped: dropped,
      };
    },
    async close() {
      closed = true;
      clearTimeout(writeTimer);
      clearTimeout(spoolTimer);
      writeTimer = spoolTimer = undefined;
      const deadline = Date.now() + (options.closeTimeoutMs ?? 10_000);
      await running;
      while (pendingCount() > 0 && Date.now() < deadline) {
        await flush();
        // A database that is down will not come back in the seconds a shutdown has: the spool keeps the rows.
        if (outage && spool) break;
        if (pendingCount() > 0) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await spoolOpening;
      if (pendingCount() > 0 && spool) {
        const current: Spool = spool;
        if (!spooling) {
          spooling = true;
          toSpool = [...queue.splice(0), ...toSpool];
        }
        await syncSpool();
        await current.close();
        logger.warn({ rows: current.size() + toSpool.length, dir: current.dir }, 'history rows left in the spool: they are written at the next start');
      } else await spool?.close();
      const lost = queue.length + toSpool.length;
      if (lost > 0 || dropped > 0) logger.error({ lost, dropped }, 'history rows could not be written before shutdown');
      return { lost: lost + dropped };
    },
  };
}

function hasSpooledRows(dir: string): boolean {
  try {
    return readdirSync(dir).some((file) => file.endsWith('.ndjson'));
  } catch {
    return false;
  }
}
