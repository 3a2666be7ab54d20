import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { stringify } from 'safe-stable-stringify';
import type { Database } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { ProviderUsage } from './providers/provider.ts';
import { cacheEntryColumns, cacheEntryFromRow, type CacheEntryRow } from './cache-rows.ts';
import type { HistoryWriter } from './history.ts';

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
  costUsd: number | null;
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
    const readAt = now();
    const [row] = await options.database.query<CacheEntryRow>(`SELECT ${cacheEntryColumns('e')} FROM "CacheEntry" e WHERE e."key" = $1`, [key]);
    if (!row) return undefined;
    const entry = cacheEntryFromRow(row);
    if (!isFresh(entry)) return undefined;
    // A row read while an invalidation deleted it is not kept: the next call reads again.
    if (staleSince(entry.tenant, readAt)) return undefined;
    memory?.set(key, entry);
    return entry;
  };
  const remember = (entry: CacheEntryValue) => {
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
  };
}
