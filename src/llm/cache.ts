import { createHash } from 'node:crypto';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import { stringify } from 'safe-stable-stringify';
import type { Database } from '../db/database.ts';
import type { Usd } from '../money.ts';
import type { Logger } from '../logger.ts';
import type { ProviderUsage } from './providers/provider.ts';
import { cacheEntryColumns, cacheEntryFromRow, type CacheEntryRow } from './cache-rows.ts';
import type { HistoryWriter } from './history.ts';
import { KeyFilter, maxFilterKeys } from './key-filter.ts';

/** Bumped whenever what goes into a key changes, so old entries stop matching instead of lying. */
export const cacheKeyVersion = 2;

export type CallKind = 'CHAT' | 'EMBEDDING';
export type CacheMode = 'USE' | 'REFRESH' | 'BYPASS';
export type CacheStatus = 'HIT' | 'MISS' | 'REFRESH' | 'BYPASS';

/** Whose answers a key may serve, besides the request itself. */
export interface CacheScope {
  apiType: string;
  /** The provider's base URL or endpoint and API version (Provider.endpoint): no answer crosses servers. */
  endpoint: string;
  /** The caller's tenant; null when [Cache] SHARED_ACROSS_TENANTS lets tenants share answers. */
  tenant: string | null;
}

/**
 * The cache key: SHA-256 of the canonical (sorted-key) JSON of the key version, the kind, the scope
 * (API type, provider endpoint, tenant) and the request body exactly as sent upstream. The body holds
 * what determines the answer (model, messages, sampling parameters, response format, reasoning
 * effort; for embeddings the model and the one input text); `timeout` and `stream` are never part of it.
 */
export function cacheKey(kind: CallKind, scope: CacheScope, request: object): string {
  const { apiType, endpoint, tenant } = scope;
  return createHash('sha256').update(stringify({ version: cacheKeyVersion, kind, apiType, endpoint, tenant, request })!).digest('hex');
}

/** A stored response and what it cost to make. */
export interface CacheEntryValue {
  key: string;
  kind: CallKind;
  apiType: string;
  model: string;
  request: unknown;
  response: unknown;
  usage: ProviderUsage | null;
  /** USD, exact (a decimal string); null when the model has no price. */
  costUsd: Usd | null;
  createdAt: Date;
  expiresAt: Date | null;
  createdByCallId: string | null;
  /** The tenant and API key of the call that filled it. */
  tenant: string;
  apiKeyId: string | null;
  /**
   * When the call that made the answer started (for a row read back: when it was stored). An answer
   * requested before an invalidation of its tenant is never stored nor remembered after it.
   */
  requestedAt: Date;
}

/** Bytes per character of a string, per number, and per object, array, or other value, in `entrySize`'s estimate. */
const stringCharacterBytes = 1;
const numberBytes = 8;
const valueBytes = 16;

/**
 * About how much memory an entry holds: its request's and response's strings and numbers, and a fixed share
 * per object, array and other value, plus the entry's own fields. An estimate made without allocating (a
 * walk, not JSON): a string of ASCII text takes about a byte per character in V8, and objects more than
 * their JSON. Depth is bounded (the request and response are JSON from the API, never cyclic).
 */
function entrySize(entry: CacheEntryValue): number {
  const walk = (value: unknown, depth: number): number => {
    if (typeof value === 'string') return valueBytes + value.length * stringCharacterBytes;
    if (typeof value === 'number') return numberBytes;
    if (value === null || typeof value !== 'object' || depth > 64) return valueBytes;
    let bytes = valueBytes;
    if (Array.isArray(value)) for (const item of value) bytes += walk(item, depth + 1);
    else for (const key in value) bytes += valueBytes + key.length + walk((value as Record<string, unknown>)[key], depth + 1);
    return bytes;
  };
  return 512 + entry.key.length + walk(entry.request, 0) + walk(entry.response, 0);
}

/** What a cache lookup found. */
export interface CacheLookup {
  entry: CacheEntryValue | undefined;
  /** The database could not be read: a miss by necessity, not because the entry is absent. */
  unavailable: boolean;
}

export interface ResponseCache {
  /** From memory only: the hot path of a hit, with no database round trip. */
  peek(key: string): CacheEntryValue | undefined;
  /** From memory, else from the database (then kept in memory). Expired entries are not returned. */
  get(key: string): Promise<CacheEntryValue | undefined>;
  /**
   * As `get`, and never fails: when the database cannot be read, the lookup is a miss marked
   * `unavailable` (the caller asks the provider, as it would on a miss).
   */
  lookup(key: string): Promise<CacheLookup>;
  /** Keeps the entry in memory only (an entry read elsewhere, or one the database already holds). */
  remember(entry: CacheEntryValue): void;
  /** Keeps a new entry in memory now and queues its database write (durably: see HistoryWriter). */
  store(entry: CacheEntryValue): void;
  /** Counts a hit on an entry (added up in memory, written with the next batch). */
  recordHit(key: string): void;
  /**
   * Runs `work` once for concurrent callers of the same key: the first caller leads, the others
   * wait for its result. `leader` tells them apart.
   */
  singleFlight<T>(key: string, work: () => Promise<T>): Promise<{ value: T; leader: boolean }>;
  /** Drops entries from memory (after they were deleted from the database); all when keys is null. */
  forget(keys: readonly string[] | null): void;
  /**
   * Records an invalidation of a tenant's entries (null: every tenant's): from now on, answers whose
   * call started before it are neither remembered nor kept from a database read already under way.
   */
  invalidated(tenant: string | null): void;
  /** Entries kept in memory now. */
  size(): number;
  /**
   * Keys just written to the database, by this instance or another (the history's notifications on
   * cacheEntryWrittenChannel): the presence filter takes them, so that a miss on them is looked up.
   */
  written(keys: readonly string[]): void;
  /**
   * Reads the keys in the database into a new presence filter, in the background; until it is
   * complete, every memory miss looks the database up. Called at start, after the listener of
   * `written` is listening, and again whenever it may have missed notifications.
   */
  loadKeys(): void;
  /**
   * Announcements may be being missed (the listener's connection is lost): every memory miss reads
   * the database until a `loadKeys` called after this completes.
   */
  distrustKeys(): void;
  /** False when a memory miss on the key would skip the database: the filter is complete and says it is surely absent. */
  mayHold(key: string): boolean;
  /** The presence filter's state; null when there is none (every miss is looked up). */
  presence(): PresenceState | null;
  /** Stops the background load. */
  close(): Promise<void>;
}

export interface PresenceState {
  /** True once the keys in the database are in: a miss on a key it does not hold skips the database. */
  complete: boolean;
  /** Distinct keys it is sized for, and holds (estimated). */
  capacity: number;
  keys: number;
  /** Memory taken by its bits (twice that while a new one is being loaded). */
  bytes: number;
  /** Rows read by the last complete load. */
  rowsAtLoad: number;
}

export interface PresenceOptions {
  /** Where the keys in the database are read from: the dashboards' pool, not the calls'. */
  database: Pick<Database, 'analyticsQuery'>;
  /** The fewest keys a filter is sized for; it is sized for twice the rows found at load when that is more. @default 1000000 */
  minKeys?: number;
  /**
   * Keys read per round trip of the load: what it holds the event loop for at once (receiving and
   * adding them; on PGlite, which runs queries on the event loop, the query too; see
   * bench/miss-lookup.ts). @default 1000
   */
  pageSize?: number;
  /** Wait before a failed page of the load is read again. @default 1000 */
  retryMs?: number;
}

export interface ResponseCacheOptions {
  /** Plain SQL, not Prisma: a miss's lookup sits on the caller's path. */
  database: Pick<Database, 'query'>;
  /** @default 10000 */
  memoryEntries: number;
  /**
   * What the entries kept in memory may hold together, in bytes, by `entrySize`'s estimate (a long prompt is kept
   * with its answer); the least recently used go first, and an entry larger than this is not kept. @default no bound
   */
  memoryBytes?: number;
  /** The durable queue that carries entries and hits to the database with the history's rows. */
  writer: Pick<HistoryWriter, 'saveCacheEntry' | 'recordCacheHit'>;
  /** Told once when reads start failing and once when they work again. */
  logger?: Pick<Logger, 'warn' | 'info'>;
  now?: () => number;
  /**
   * A presence filter of the keys in the database, so that a memory miss on a key surely absent
   * skips the database. Without it every memory miss reads the database.
   */
  presence?: PresenceOptions;
}

/**
 * A Bloom filter (KeyFilter) of the keys in "CacheEntry", fed by this instance's stores, the keys
 * every instance's history announces, the rows lookups find, and a keyset-paginated read of the
 * table in the background. It answers "surely absent" only while complete: from the end of a load
 * that began after the announcements were being listened to, until `load` is called again (a lost
 * listener). A filter past its capacity is replaced by one twice as big, loaded in the background
 * while the full one keeps answering (more false positives, never a wrong "absent"). Deleted or
 * expired entries stay in it until the next load: a false "maybe" only costs a lookup.
 */
function keyPresence(options: PresenceOptions, logger: Pick<Logger, 'warn' | 'info'> | undefined) {
  const minKeys = options.minKeys ?? 1_000_000;
  const pageSize = options.pageSize ?? 1000;
  const retryMs = options.retryMs ?? 1000;
  let current = new KeyFilter(minKeys);
  // The filter being loaded: it takes every key `current` takes, and replaces it when loaded.
  let next: KeyFilter | null = null;
  let complete = false;
  let rowsAtLoad = 0;
  // A load stops when a later one starts, or at close.
  let generation = 0;
  let closed = false;
  let running: Promise<void> = Promise.resolve();

  async function loadInto(filter: KeyFilter, run: number): Promise<void> {
    const started = performance.now();
    let after = '';
    let rows = 0;
    let failing = false;
    for (;;) {
      let page: { key: string }[];
      try {
        page = await options.database.analyticsQuery<{ key: string }>(`SELECT "key" FROM "CacheEntry" WHERE "key" > $1 ORDER BY "key" LIMIT ${pageSize}`, [after]);
      } catch (error) {
        if (!failing) logger?.warn({ err: error }, 'cache keys cannot be read: every memory miss reads the database until they are');
        failing = true;
        if (run !== generation || closed) return;
        await sleep(retryMs, undefined, { ref: false });
        if (run !== generation || closed) return;
        continue;
      }
      if (run !== generation || closed) return;
      for (const row of page) filter.add(row.key);
      rows += page.length;
      if (page.length < pageSize) break;
      after = page[page.length - 1]!.key;
      // Between pages the calls run: a load never holds the event loop for more than a page.
      await nextTurn();
      if (run !== generation || closed) return;
    }
    current = filter;
    next = null;
    complete = true;
    rowsAtLoad = rows;
    logger?.info(
      { rows, capacity: filter.capacity, megabytes: Math.round(filter.bytes / 1e4) / 100, seconds: Math.round(performance.now() - started) / 1000 },
      'cache keys loaded: a memory miss on a key not in the database skips it',
    );
    // Found too small (more than three quarters full), or filled past its capacity while it loaded:
    // a bigger one, this one answering meanwhile.
    if (filter.capacity < maxFilterKeys && (rows > 0.75 * filter.capacity || filter.full)) load(false);
  }

  function load(reset: boolean): void {
    if (closed) return;
    const run = ++generation;
    if (reset) complete = false;
    const estimate = current.estimatedKeys();
    const filter = new KeyFilter(Math.max(minKeys, 2 * Math.max(rowsAtLoad, Number.isFinite(estimate) ? estimate : current.capacity)));
    next = filter;
    running = loadInto(filter, run);
  }

  return {
    surelyAbsent: (key: string) => complete && !current.mightContain(key),
    add(key: string): void {
      current.add(key);
      next?.add(key);
      // Past its capacity: a bigger one is loaded while this one keeps answering.
      if (complete && next === null && current.full && current.capacity < maxFilterKeys) load(false);
    },
    load: () => load(true),
    // No load now (the database may be out of reach): the next `load` makes it whole again.
    distrust(): void {
      generation += 1;
      complete = false;
      next = null;
    },
    state: (): PresenceState => ({ complete, capacity: current.capacity, keys: current.estimatedKeys(), bytes: current.bytes, rowsAtLoad }),
    async close() {
      closed = true;
      await running;
    },
  };
}

export function createResponseCache(options: ResponseCacheOptions): ResponseCache {
  const now = options.now ?? Date.now;
  const memory =
    options.memoryEntries > 0
      ? new LRUCache<string, CacheEntryValue>({
          max: options.memoryEntries,
          ...(options.memoryBytes ? { maxSize: options.memoryBytes, maxEntrySize: options.memoryBytes, sizeCalculation: entrySize } : {}),
        })
      : null;
  const flights = new Map<string, Promise<unknown>>();
  const isFresh = (entry: CacheEntryValue) => entry.expiresAt === null || entry.expiresAt.getTime() > now();
  // When each tenant's entries ('*': everyone's) were last invalidated, on this process's clock.
  const invalidations = new Map<string, number>();
  const staleSince = (tenant: string, time: number) => time <= Math.max(invalidations.get('*') ?? -Infinity, invalidations.get(tenant) ?? -Infinity);
  const presence = options.presence ? keyPresence(options.presence, options.logger) : null;

  const peek = (key: string) => {
    const entry = memory?.get(key);
    if (entry && !isFresh(entry)) {
      memory!.delete(key);
      return undefined;
    }
    return entry;
  };

  const get = async (key: string) => {
    const remembered = peek(key);
    if (remembered) return remembered;
    // No round trip for a key the database surely does not hold (the race: see keyPresence).
    if (presence?.surelyAbsent(key)) return undefined;
    const readAt = now();
    const [row] = await options.database.query<CacheEntryRow>(`SELECT ${cacheEntryColumns('e')} FROM "CacheEntry" e WHERE e."key" = $1`, [key], { name: 'callboard_cache_lookup' });
    if (!row) return undefined;
    presence?.add(key);
    const entry = cacheEntryFromRow(row);
    if (!isFresh(entry)) return undefined;
    // A row read while an invalidation deleted it is not kept: the next call reads again.
    if (staleSince(entry.tenant, readAt)) return undefined;
    memory?.set(key, entry);
    return entry;
  };
  const remember = (entry: CacheEntryValue) => {
    // Whether or not memory keeps it, the database holds it or soon will.
    presence?.add(entry.key);
    if (!staleSince(entry.tenant, entry.requestedAt.getTime())) memory?.set(entry.key, entry);
  };
  let failing: { since: number; count: number } | null = null;

  return {
    peek,
    get,
    async lookup(key) {
      try {
        const entry = await get(key);
        if (failing) {
          options.logger?.info({ failedReads: failing.count, seconds: (Date.now() - failing.since) / 1000 }, 'cache reads work again');
          failing = null;
        }
        return { entry, unavailable: false };
      } catch (error) {
        // The cache saves money and time; it is no reason to fail a call the provider can answer.
        if (!failing) {
          failing = { since: Date.now(), count: 0 };
          options.logger?.warn({ err: error }, 'cache reads failing: calls go to the provider until the database answers');
        }
        failing.count += 1;
        return { entry: undefined, unavailable: true };
      }
    },
    remember,
    store(entry) {
      remember(entry);
      options.writer.saveCacheEntry(entry);
    },
    recordHit(key) {
      options.writer.recordCacheHit(key, new Date());
    },
    async singleFlight(key, work) {
      const running = flights.get(key);
      if (running) return { value: (await running) as Awaited<ReturnType<typeof work>>, leader: false };
      const flight = work();
      flights.set(key, flight);
      try {
        return { value: await flight, leader: true };
      } finally {
        flights.delete(key);
      }
    },
    forget(keys) {
      if (keys === null) memory?.clear();
      else for (const key of keys) memory?.delete(key);
    },
    invalidated(tenant) {
      invalidations.set(tenant ?? '*', now());
    },
    size: () => memory?.size ?? 0,
    written(keys) {
      if (presence) for (const key of keys) presence.add(key);
    },
    loadKeys() {
      presence?.load();
    },
    distrustKeys() {
      presence?.distrust();
    },
    mayHold: (key) => !presence?.surelyAbsent(key),
    presence: () => presence?.state() ?? null,
    close: async () => presence?.close(),
  };
}
