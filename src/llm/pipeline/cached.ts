import type { CacheEntryValue, CacheMode, ResponseCache } from '../cache.ts';
import type { AttemptRow } from '../history.ts';
import { abortedError, untilAborted, type CallBounds } from './bounds.ts';

/** An answer the provider just gave, and the attempts it took. */
export interface Fresh<R> {
  response: R;
  attempts: AttemptRow[];
}

/** Where an answer came from: a cache entry, or the provider (the cache read failing or not). */
export type Served<R> =
  | { status: 'HIT'; entry: CacheEntryValue }
  | { status: 'MISS' | 'REFRESH' | 'BYPASS'; fresh: Fresh<R>; cacheReadFailed: boolean };

/**
 * A caller that led a shared request and stopped waiting (aborted, or its deadline came) while the
 * request went on for the others: its row still gets the attempts it started, once they end.
 */
export type LeaderGaveUp<R> = Error & { sharedOutcome?: Promise<{ attempts: AttemptRow[]; response: R | null }> };

export interface ServeOptions<R> {
  mode: CacheMode;
  key: string;
  /** Goes to the provider; `signal` is the caller's, or none for a request shared with other callers. */
  upstream: (signal: AbortSignal | undefined) => Promise<Fresh<R>>;
  /** Makes the entry for a fresh answer (null: nothing to store); the step stores it. */
  entryOf: (fresh: Fresh<R>) => CacheEntryValue | null;
  signal: AbortSignal | undefined;
  bounds: CallBounds;
}

export interface CacheStep {
  /**
   * The cache step. BYPASS: the provider, nothing stored. REFRESH: the provider, the entry replaced,
   * every instance told. USE: a hit from memory costs no round trip; otherwise one request per key
   * at a time (single flight: concurrent callers of the same key wait for the first one's answer),
   * which reads the database, then asks the provider on a miss and stores the answer.
   */
  serve<R>(options: ServeOptions<R>): Promise<Served<R>>;
}

export function createCacheStep(options: { cache: ResponseCache; entryReplaced?: (key: string) => void }): CacheStep {
  const { cache } = options;
  const store = <R>(entryOf: (fresh: Fresh<R>) => CacheEntryValue | null, fresh: Fresh<R>) => {
    const entry = entryOf(fresh);
    if (entry) cache.store(entry);
    return entry;
  };
  return {
    async serve<R>({ mode, key, upstream, entryOf, signal, bounds }: ServeOptions<R>): Promise<Served<R>> {
      if (mode === 'BYPASS') return { status: 'BYPASS', fresh: await upstream(signal), cacheReadFailed: false };
      if (mode === 'REFRESH') {
        const fresh = await upstream(signal);
        store(entryOf, fresh);
        options.entryReplaced?.(key);
        return { status: 'REFRESH', fresh, cacheReadFailed: false };
      }
      const remembered = cache.peek(key);
      if (remembered) {
        cache.recordHit(key);
        return { status: 'HIT', entry: remembered };
      }
      // A caller gone already starts no request that nobody would record.
      if (signal?.aborted) throw abortedError();
      // owning: this caller's request is the shared one (its row gets its attempts, even after it gave
      // up); leading: that request went upstream, bounded by this caller's own deadline.
      let owning = false;
      let leading = false;
      // The shared upstream call ignores any one caller's abort: each caller stops waiting on its own
      // signal, and the others (and the cache) still get the answer.
      const flight = cache.singleFlight(key, async () => {
        owning = true;
        const found = await cache.lookup(key);
        if (found.entry) return { entry: found.entry, fresh: null, cacheReadFailed: false };
        leading = true;
        const fresh = await upstream(undefined);
        return { entry: store(entryOf, fresh), fresh, cacheReadFailed: found.unavailable };
      });
      // The flight's own failure comes as a value: untilAborted rejects only when this caller gives up.
      const settled = flight.then(
        (result) => ({ ok: true as const, result }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      const outcome = await untilAborted(settled, signal, bounds, () => leading).catch((error: LeaderGaveUp<R>) => {
        if (owning) {
          error.sharedOutcome = flight.then(
            ({ value: shared }) => ({ attempts: shared.fresh?.attempts ?? [], response: shared.fresh?.response ?? null }),
            (failure: { attempts?: AttemptRow[] }) => ({ attempts: failure.attempts ?? [], response: null }),
          );
        }
        throw error;
      });
      if (!outcome.ok) throw outcome.error;
      const { value, leader } = outcome.result;
      if (leader && value.fresh) return { status: 'MISS', fresh: value.fresh, cacheReadFailed: value.cacheReadFailed };
      // Answered by another caller's request or by the database: for this call, a hit.
      const entry = value.entry ?? null;
      if (!entry) throw new Error('A shared request answered without an entry.');
      cache.recordHit(key);
      return { status: 'HIT', entry };
    },
  };
}
