import type { CacheEntryFilter } from '../../analytics/cache-entries.ts';
import { access, builder } from '../builder.ts';
import { connectionComplexity, connectionOf } from './connection.ts';
import { CallKind, OrderDirection, Usage } from './enums.ts';
import { LlmCallConnection } from './calls.ts';
import { CacheEntry, LlmCall } from './refs.ts';

CacheEntry.implement({
  description: 'A stored provider answer, keyed by the SHA-256 of the canonical request (provider, model, messages, sampling parameters, response format).',
  fields: (t) => ({
    key: t.exposeString('key', { description: 'The cache key.' }),
    keyVersion: t.exposeInt('keyVersion', { description: 'The version of the key recipe it was made with.' }),
    kind: t.field({ type: CallKind, resolve: (entry) => entry.kind, description: 'Chat or embedding.' }),
    apiType: t.exposeString('apiType', { description: 'The provider that answered.' }),
    model: t.exposeString('model', { description: 'The model asked for.' }),
    request: t.field({ type: 'JSON', resolve: (entry) => entry.request, description: 'The request as sent upstream.' }),
    response: t.field({ type: 'JSON', resolve: (entry) => entry.response, description: 'The stored answer.' }),
    usage: t.field({ type: Usage, nullable: true, resolve: (entry) => entry.usage, description: 'Tokens the answer cost when it was made.' }),
    costUsd: t.expose('costUsd', { type: 'Decimal', nullable: true, description: 'What the answer cost when it was made, in USD, exact; each hit saves this much.' }),
    hitCount: t.exposeInt('hitCount', { description: 'Calls answered from this entry.' }),
    createdAt: t.field({ type: 'DateTime', resolve: (entry) => entry.createdAt, description: 'When it was stored.' }),
    lastHitAt: t.field({ type: 'DateTime', nullable: true, resolve: (entry) => entry.lastHitAt, description: 'When it last answered a call.' }),
    expiresAt: t.field({ type: 'DateTime', nullable: true, resolve: (entry) => entry.expiresAt, description: 'When it stops being served ([Cache] TTL); null: never.' }),
    createdBy: t.field({
      type: LlmCall,
      nullable: true,
      description: 'The call whose provider answer filled this entry.',
      resolve: (entry, _args, context) => (entry.createdByCallId ? context.loaders.call.load(entry.createdByCallId) : null),
    }),
    servedCalls: t.field({
      type: LlmCallConnection,
      description: 'The calls this entry answered (cache hits), newest first: this entry as it is, not an earlier answer stored under the same key.',
      complexity: connectionComplexity,
      args: { first: t.arg.int({ description: 'Page size, 0 to 100. Default 20.' }), after: t.arg.string({ description: 'The endCursor of the previous page.' }) },
      resolve: async (entry, args, context) => ({
        page: await context.loaders.hitPage.load({ cacheKey: entry.key, servedBy: entry.createdByCallId, first: args.first, after: args.after }),
        after: args.after,
      }),
    }),
  }),
});

const CacheEntryConnection = connectionOf('CacheEntry', CacheEntry, 'A page of cache entries.');

const CacheEntryFilterInput = builder.inputType('CacheEntryFilter', {
  description: 'Which cache entries. Every field narrows; a list matches any of its values.',
  fields: (t) => ({
    keys: t.stringList({ description: 'Any of these keys.' }),
    kinds: t.field({ type: [CallKind], description: 'Any of these kinds.' }),
    models: t.stringList({ description: 'Any of these models.' }),
    apiTypes: t.stringList({ description: 'Any of these providers.' }),
    from: t.field({ type: 'DateTime', description: 'Stored at or after this time.' }),
    to: t.field({ type: 'DateTime', description: 'Stored before this time.' }),
    text: t.string({ description: 'Text contained in the stored request, case-insensitive.' }),
    expired: t.boolean({ description: 'True: only expired entries; false: only live ones.' }),
    minHitCount: t.int({ description: 'Entries with at least this many hits.' }),
  }),
});

const CacheEntryOrderField = builder.enumType('CacheEntryOrderField', {
  description: 'What to sort cache entries by.',
  values: {
    CREATED_AT: { description: 'When stored.' },
    LAST_HIT_AT: { description: 'When last hit (never-hit entries last when descending).' },
    HIT_COUNT: { description: 'Number of hits.' },
    COST: { description: 'What the answer cost (unpriced last when descending).' },
  } as const,
});

const CacheEntryOrderInput = builder.inputType('CacheEntryOrder', {
  description: 'The order of a cache entry list. Default: newest first.',
  fields: (t) => ({
    field: t.field({ type: CacheEntryOrderField, required: true, description: 'What to sort by.' }),
    direction: t.field({ type: OrderDirection, defaultValue: 'DESC', description: 'Which way.' }),
  }),
});

builder.queryFields((t) => ({
  cacheEntry: t.field({
    ...access.member,
    type: CacheEntry,
    nullable: true,
    description: 'One cache entry; null when no entry has that key.',
    args: { key: t.arg.string({ required: true, description: 'The cache key.' }) },
    resolve: (_root, args, context) => context.cacheEntries.find(args.key),
  }),
  cacheEntries: t.field({
    ...access.member,
    type: CacheEntryConnection,
    description: 'The cache, filtered and sorted, a page at a time.',
    complexity: connectionComplexity,
    args: {
      first: t.arg.int({ description: 'Page size, 0 to 100. Default 20.' }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
      filter: t.arg({ type: CacheEntryFilterInput, description: 'Which entries.' }),
      orderBy: t.arg({ type: CacheEntryOrderInput, description: 'The order. Default: newest first.' }),
    },
    resolve: async (_root, args, context) => ({
      page: await context.cacheEntries.list({
        first: args.first,
        after: args.after,
        filter: args.filter as CacheEntryFilter | null,
        orderBy: args.orderBy ? { field: args.orderBy.field, direction: args.orderBy.direction ?? 'DESC' } : null,
      }),
      after: args.after,
    }),
  }),
}));

const InvalidateCachePayload = builder.objectRef<{ matched: number; deleted: number; dryRun: boolean }>('InvalidateCachePayload').implement({
  description: 'What invalidateCache matched and did.',
  fields: (t) => ({
    matched: t.exposeInt('matched', { description: 'Entries the filter matched.' }),
    deleted: t.exposeInt('deleted', { description: 'Entries deleted (0 on a dry run).' }),
    dryRun: t.exposeBoolean('dryRun', { description: 'True when nothing was deleted on purpose.' }),
  }),
});

builder.mutationField('invalidateCache', (t) =>
  t.field({
    type: InvalidateCachePayload,
    description: 'Deletes the cache entries a filter matches (all of them without a filter), from the database and from memory. With dryRun, only counts them.',
    args: {
      filter: t.arg({ type: CacheEntryFilterInput, description: 'Which entries; omit for all.' }),
      dryRun: t.arg.boolean({ defaultValue: false, description: 'Count without deleting.' }),
    },
    resolve: async (_root, args, context) => {
      const dryRun = args.dryRun ?? false;
      // Entries are written behind the callers' backs: one still queued would come back after the delete.
      await context.services.history.flush();
      const result = await context.cacheEntries.invalidate(args.filter as CacheEntryFilter | null, dryRun, context.actor);
      context.services.logger.info({ actor: context.actor, filter: args.filter, ...result, dryRun }, 'cache invalidated');
      return { ...result, dryRun };
    },
  }),
);
