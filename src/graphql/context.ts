import type { CacheEntryQueries } from '../analytics/cache-entries.ts';
import type { CallEvent } from '../analytics/call-events.ts';
import type { CallStatsBucket, CallStatsDimension, CallStatsOptions } from '../analytics/call-stats.ts';
import type { CallFilter, CallQueries } from '../analytics/calls.ts';
import type { Identity } from '../auth/identity.ts';
import type { Caller } from '../llm/client.ts';
import type { Services } from '../services.ts';
import type { RequestLog } from '../observability/request-log.ts';
import type { Loaders } from './loaders.ts';

/**
 * What resolvers may use. The Prisma client stays out: resolvers go through services and queries,
 * and the history and cache queries are already narrowed to what the caller's identity may read.
 */
export interface GraphQLContext {
  services: Services;
  calls: CallQueries;
  cacheEntries: CacheEntryQueries;
  /** Per-request batching of what the rows of a list ask for. */
  loaders: Loaders;
  /**
   * Starts new loaders: a subscription is one long request, so it calls this before each event, and
   * nothing an event read is kept for the next.
   */
  renewLoaders(): void;
  /** Calls the caller may read, as they are written (its tenant's; every tenant's for an ADMIN), matching `filter`. */
  watchCalls(filter: CallFilter | null): AsyncIterableIterator<CallEvent>;
  callStats(filter: CallFilter | null, groupBy: readonly CallStatsDimension[], options?: CallStatsOptions): Promise<CallStatsBucket[]>;
  /** Who is calling, decided once at the door. */
  identity: Identity;
  /** The identity as the client records calls: tenant, key and limits. */
  caller: Caller;
  /** How audits name the caller: its identity, with the `x-callboard-actor` header as a note. */
  actor: string;
  /** Lets a caller that goes away abort its upstream call. */
  signal: AbortSignal;
  /** The request's log line and trace: calls given it (RecordedOptions.requestLog) are listed in them. */
  requestLog: RequestLog;
}
