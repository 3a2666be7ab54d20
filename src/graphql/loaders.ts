import DataLoader from 'dataloader';
import type { CacheEntryQueries, CacheEntryView } from '../analytics/cache-entries.ts';
import type { CallBody, CallQueries, CallView, EntryIdentity, Page } from '../analytics/calls.ts';
import type { KeyUsage, LimitStore } from '../auth/limits.ts';
import type { AttemptRow } from '../llm/history.ts';

interface HitPageKey {
  cacheKey: string;
  /** The call that filled the entry: its hits, not those of an earlier answer under the same key. */
  servedBy: string | null;
  first: number | null | undefined;
  after: string | null | undefined;
}

/**
 * What the rows of a page ask for (a call's attempts and cache entry, an entry's creating call and
 * served calls), gathered while a list resolves and read in one query per kind: the number of
 * queries of a nested page does not grow with its rows. Made anew for each request, so nothing read
 * is kept past it.
 */
export function createLoaders(queries: { calls: CallQueries; cacheEntries: CacheEntryQueries; limits: Pick<LimitStore, 'usage'> }) {
  const hitCounts = new DataLoader<EntryIdentity, number, string>((entries) => queries.calls.countHits(entries), {
    cacheKeyFn: (entry) => JSON.stringify([entry.key, entry.createdByCallId]),
  });
  return {
    /** What each key has spent against its limits, for a page of keys in one query. */
    keyUsage: new DataLoader<string, KeyUsage>(async (ids) => {
      const usage = await queries.limits.usage(ids);
      return ids.map((id) => usage.get(id)!);
    }),
    call: new DataLoader<string, CallView | null>((ids) => queries.calls.findMany(ids)),
    attempts: new DataLoader<string, AttemptRow[]>((callIds) => queries.calls.attemptsOf(callIds)),
    /** The bodies of calls read without them (call events). */
    callBody: new DataLoader<string, CallBody | null>((callIds) => queries.calls.bodiesOf(callIds)),
    cacheEntry: new DataLoader<string, CacheEntryView | null>((keys) => queries.cacheEntries.findMany(keys)),
    hitPage: new DataLoader<HitPageKey, Page<CallView>, string>(
      async (requests) => {
        // Entries asked for the same page (first, after) share one query.
        const groups = new Map<string, { page: HitPageKey; indexes: number[] }>();
        requests.forEach((request, index) => {
          const group = JSON.stringify([request.first ?? null, request.after ?? null]);
          if (!groups.has(group)) groups.set(group, { page: request, indexes: [] });
          groups.get(group)!.indexes.push(index);
        });
        const pages: Page<CallView>[] = new Array(requests.length);
        await Promise.all(
          [...groups.values()].map(async ({ page, indexes }) => {
            const entries = indexes.map((index) => ({ key: requests[index]!.cacheKey, createdByCallId: requests[index]!.servedBy }));
            const results = await queries.calls.hitPages(entries, { first: page.first, after: page.after }, (entry) => hitCounts.load(entry));
            indexes.forEach((index, position) => (pages[index] = results[position]!));
          }),
        );
        return pages;
      },
      { cacheKeyFn: (request) => JSON.stringify([request.cacheKey, request.servedBy, request.first ?? null, request.after ?? null]) },
    ),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;
