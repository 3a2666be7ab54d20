import type { CacheEntryQueries } from '../analytics/cache-entries.ts';
import type { CallStatsBucket, CallStatsDimension, CallStatsOptions } from '../analytics/call-stats.ts';
import type { CallFilter, CallQueries } from '../analytics/calls.ts';
import type { Services } from '../services.ts';
import type { Loaders } from './loaders.ts';

/** What resolvers may use. The Prisma client stays out: resolvers go through services and queries. */
export interface GraphQLContext {
  services: Services;
  calls: CallQueries;
  cacheEntries: CacheEntryQueries;
  /** Per-request batching of what the rows of a list ask for. */
  loaders: Loaders;
  callStats(filter: CallFilter | null, groupBy: readonly CallStatsDimension[], options?: CallStatsOptions): Promise<CallStatsBucket[]>;
  /** Who is asking, recorded with every admin change: the `x-callboard-actor` header, else "anonymous". */
  actor: string;
  /** Lets a caller that goes away abort its upstream call. */
  signal: AbortSignal;
}
