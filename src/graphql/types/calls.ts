import { defaultBufferEvents, maxFilterCharacters, type CallEvent } from '../../analytics/call-events.ts';
import type { CallStatsBucket } from '../../analytics/call-stats.ts';
import type { CallBody, CallFilter, CallView } from '../../analytics/calls.ts';
import type { GraphQLContext } from '../context.ts';
import { selectsField } from '../selection.ts';
import type { AttemptRow } from '../../llm/history.ts';
import { countMessageTokensAsync, countTextTokensAsync, type TokenMessage } from '../../llm/tokens.ts';
import { access, builder } from '../builder.ts';
import { connectionComplexity, connectionOf } from './connection.ts';
import { CacheStatus, CallKind, CallStatus, OrderDirection, Usage } from './enums.ts';
import { CacheEntry, LlmCall } from './refs.ts';

const LlmAttempt = builder.objectRef<AttemptRow>('LlmAttempt').implement({
  description: 'One upstream request made for a call.',
  fields: (t) => ({
    number: t.exposeInt('number', { description: '1 for the first attempt.' }),
    startedAt: t.field({ type: 'DateTime', resolve: (attempt) => attempt.startedAt, description: 'When the request was sent.' }),
    latencyMs: t.exposeFloat('latencyMs', { description: 'How long the provider took to answer or fail.' }),
    httpStatus: t.exposeInt('httpStatus', { nullable: true, description: "The provider's HTTP status; null when it never answered (timeout, connection error)." }),
    errorCode: t.exposeString('errorCode', { nullable: true, description: 'Why the attempt failed; null when it succeeded.' }),
    errorMessage: t.exposeString('errorMessage', { nullable: true, description: 'What the provider said.' }),
    waitMs: t.exposeInt('waitMs', { nullable: true, description: 'How long the retry loop waited after this attempt before the next one.' }),
    requestId: t.exposeString('requestId', { nullable: true, description: "The provider's request id (x-request-id), for its support." }),
  }),
});

/** A call's bodies: those of its row, or loaded when the row was read without them (call events). */
async function bodyOf(call: CallView, context: GraphQLContext): Promise<Partial<CallBody> | null> {
  return call.requestBody === undefined ? context.loaders.callBody.load(call.id) : call;
}

LlmCall.implement({
  description: 'One logical call (chat or embedding) as a caller made it, from the audit history: a cache hit, a provider answer, or a failure.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The call id (a UUIDv7, so ids sort by time).' }),
    tenant: t.exposeString('tenant', { description: 'The tenant of the key that made it ("default" in open mode and for the master key).' }),
    apiKeyId: t.exposeID('apiKeyId', { nullable: true, description: 'The API key that made it; null for the master key and open mode.' }),
    createdAt: t.field({ type: 'DateTime', resolve: (call) => call.createdAt, description: 'When the call started.' }),
    kind: t.field({ type: CallKind, resolve: (call) => call.kind, description: 'Chat or embedding.' }),
    apiType: t.exposeString('apiType', { description: 'The provider that served it: openai, azure, openai-compatible, ...' }),
    model: t.exposeString('model', { description: 'The model that answered (the asked model when it failed).' }),
    status: t.field({ type: CallStatus, resolve: (call) => call.status, description: 'How the call ended.' }),
    cacheStatus: t.field({ type: CacheStatus, resolve: (call) => call.cacheStatus, description: 'What the cache did.' }),
    cacheKey: t.exposeString('cacheKey', { nullable: true, description: 'The cache entry it read or wrote (null for bypassed calls and batches of several texts).' }),
    cacheEntry: t.field({
      authScopes: { member: true },
      type: CacheEntry,
      nullable: true,
      description:
        'The cache entry it read or wrote, while that entry exists: null once it was invalidated, expired, or replaced by a REFRESH (another answer under the same key is not the one this call got).',
      resolve: async (call, _args, context) => {
        if (!call.cacheKey) return null;
        const entry = await context.loaders.cacheEntry.load(call.cacheKey);
        const filledBy = call.cacheStatus === 'HIT' ? call.servedByCallId : call.id;
        return entry && entry.createdByCallId === filledBy ? entry : null;
      },
    }),
    errorCode: t.exposeString('errorCode', { nullable: true, description: 'Why it failed (the code the caller got); null on success.' }),
    errorMessage: t.exposeString('errorMessage', { nullable: true, description: 'The message the caller got.' }),
    attemptCount: t.exposeInt('attemptCount', { description: 'Upstream requests made (0 for a cache hit).' }),
    attempts: t.field({
      type: [LlmAttempt],
      description: 'Every upstream request, with status, error and the wait that followed.',
      resolve: (call, _args, context) => call.attempts ?? context.loaders.attempts.load(call.id),
    }),
    latencyMs: t.exposeFloat('latencyMs', { description: 'From the call reaching Callboard to its answer (for a stream: to its last chunk).' }),
    streamed: t.exposeBoolean('streamed', { description: 'The caller asked for a stream (REST stream: true, or the sendMessageStream subscription).' }),
    timeToFirstTokenMs: t.exposeFloat('timeToFirstTokenMs', { nullable: true, description: 'For a stream: from the call reaching Callboard to its first chunk sent on.' }),
    usage: t.field({
      type: Usage,
      nullable: true,
      description: "The provider's token counts (for a hit: those of the stored answer).",
      resolve: (call) =>
        call.promptTokens === null ? null : { promptTokens: call.promptTokens, completionTokens: call.completionTokens ?? 0, totalTokens: call.totalTokens ?? call.promptTokens },
    }),
    estimatedPromptTokens: t.int({
      nullable: true,
      description: "Callboard's own count of the prompt (OpenAI's tokenizer), made off the caller's path.",
      resolve: async (call, _args, context) => {
        if (call.estimatedPromptTokens !== null) return call.estimatedPromptTokens;
        // Long prompts are not counted while the history is written; the async count yields as it goes.
        const body = (await bodyOf(call, context))?.requestBody as { messages?: TokenMessage[]; input?: string[] } | null | undefined;
        if (body?.messages) return (await countMessageTokensAsync(body.messages, call.model)).tokens;
        if (body?.input) {
          let tokens = 0;
          for (const text of body.input) tokens += (await countTextTokensAsync(text, call.model)).tokens;
          return tokens;
        }
        return null;
      },
    }),
    costUsd: t.expose('costUsd', {
      type: 'Decimal',
      nullable: true,
      description: 'USD spent on the call at the configured prices, exact: "0" for a cache hit (it spent nothing). Null when the model has no price.',
    }),
    costSavedUsd: t.expose('costSavedUsd', {
      type: 'Decimal',
      nullable: true,
      description: 'For a cache hit: what its answer cost when it was produced, the USD the hit saved. Null for other calls, and when the model has no price.',
    }),
    templateName: t.exposeString('templateName', { nullable: true, description: 'The template(s) of a templated call, system first.' }),
    templateHash: t.exposeString('templateHash', { nullable: true, description: "SHA-256 of the templates' text: changes when a template changes." }),
    tags: t.exposeStringList('tags', { description: "The caller's tags." }),
    metadata: t.field({
      authScopes: { member: true },
      type: 'JSON',
      nullable: true,
      resolve: async (call, _args, context) => (await bodyOf(call, context))?.metadata ?? null,
      description: "The caller's metadata.",
    }),
    requestBody: t.field({
      authScopes: { member: true },
      type: 'JSON',
      nullable: true,
      resolve: async (call, _args, context) => (await bodyOf(call, context))?.requestBody ?? null,
      description: 'What was sent upstream (null when [History] STORE_BODIES is off). Never holds API keys.',
    }),
    responseBody: t.field({
      authScopes: { member: true },
      type: 'JSON',
      nullable: true,
      resolve: async (call, _args, context) => (await bodyOf(call, context))?.responseBody ?? null,
      description: 'What the provider answered (null when not stored).',
    }),
  }),
});

export const LlmCallConnection = connectionOf('LlmCall', LlmCall, 'A page of the call history.');

export const CallFilterInput = builder.inputType('CallFilter', {
  description: 'Which calls to consider. Every field narrows; a list matches any of its values.',
  fields: (t) => ({
    from: t.field({ type: 'DateTime', description: 'Calls made at or after this time.' }),
    to: t.field({ type: 'DateTime', description: 'Calls made before this time.' }),
    models: t.stringList({ description: 'Any of these models.' }),
    apiTypes: t.stringList({ description: 'Any of these providers.' }),
    kinds: t.field({ type: [CallKind], description: 'Any of these kinds.' }),
    statuses: t.field({ type: [CallStatus], description: 'Any of these statuses.' }),
    cacheStatuses: t.field({ type: [CacheStatus], description: 'Any of these cache statuses.' }),
    tags: t.stringList({ description: 'Calls carrying any of these tags.' }),
    templateNames: t.stringList({ description: 'Calls made from any of these templates.' }),
    errorCodes: t.stringList({ description: 'Calls that failed with any of these codes.' }),
    cacheKeys: t.stringList({ description: 'Calls that read or wrote any of these cache entries.' }),
    text: t.string({ description: 'Text contained in the request (messages or texts), case-insensitive.' }),
    tenants: t.stringList({ description: "Calls of any of these tenants (only an ADMIN reads other tenants than its key's)." }),
    apiKeyIds: t.idList({ description: 'Calls made with any of these API keys.' }),
  }),
});

const CallOrderField = builder.enumType('CallOrderField', {
  description: 'What to sort calls by.',
  values: {
    CREATED_AT: { description: 'When the call was made.' },
    LATENCY: { description: 'latencyMs.' },
    TOKENS: { description: 'Total tokens (calls without usage last when descending).' },
    COST: { description: 'costUsd (unpriced calls last when descending).' },
  } as const,
});

const CallOrderInput = builder.inputType('CallOrder', {
  description: 'The order of a call list. Default: newest first.',
  fields: (t) => ({
    field: t.field({ type: CallOrderField, required: true, description: 'What to sort by.' }),
    direction: t.field({ type: OrderDirection, defaultValue: 'DESC', description: 'Which way.' }),
  }),
});

builder.queryFields((t) => ({
  call: t.field({
    ...access.viewer,
    type: LlmCall,
    nullable: true,
    description: 'One call of the history with its attempts; null when no call has that id.',
    args: { id: t.arg.id({ required: true, description: 'The call id.' }) },
    resolve: (_root, args, context) => context.calls.find(String(args.id)),
  }),
  calls: t.field({
    ...access.viewer,
    type: LlmCallConnection,
    description: 'The call history, filtered and sorted, a page at a time.',
    complexity: connectionComplexity,
    args: {
      first: t.arg.int({ description: 'Page size, 0 to 100. Default 20.' }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
      filter: t.arg({ type: CallFilterInput, description: 'Which calls.' }),
      orderBy: t.arg({ type: CallOrderInput, description: 'The order. Default: newest first.' }),
    },
    resolve: async (_root, args, context) => ({
      page: await context.calls.list({
        first: args.first,
        after: args.after,
        filter: args.filter as CallFilter | null,
        orderBy: args.orderBy ? { field: args.orderBy.field, direction: args.orderBy.direction ?? 'DESC' } : null,
      }),
      after: args.after,
    }),
  }),
}));

const CallEventRef = builder.objectRef<CallEvent>('CallEvent').implement({
  description: 'A call of the history, sent to subscribers once it is written.',
  fields: (t) => ({
    call: t.field({ type: LlmCall, resolve: (event) => event.call, description: 'The call, as `call(id)` would answer it.' }),
    missed: t.exposeInt('missed', {
      description:
        'Calls this subscription may have missed just before this one: 0 normally. When a subscriber reads more slowly than calls come, ' +
        `${defaultBufferEvents} events wait for it and older ones are dropped; calls this instance could not read count too (before the filter is applied, so at most). ` +
        'When it is not 0, read `calls` to catch up.',
    }),
  }),
});

builder.subscriptionField('callEvents', (t) =>
  t.field({
    ...access.viewer,
    type: CallEventRef,
    description:
      "Each call of the caller's tenant (every tenant for an ADMIN) that matches the filter, as soon as it is written to the history, whichever instance on the same database served it. " +
      `The filter may hold at most ${maxFilterCharacters} characters as JSON. The stream completes when the server stops, or when this instance lost its connection to the database and may have missed calls: subscribe again, and read \`calls\` to catch up.`,
    args: { filter: t.arg({ type: CallFilterInput, description: 'Which calls.' }) },
    subscribe: (_root, args, context) => context.watchCalls(args.filter as CallFilter | null),
    resolve: (event, _args, context) => {
      context.renewLoaders();
      return event;
    },
  }),
);

const CallStatsDimension = builder.enumType('CallStatsDimension', {
  description: 'A way to group the call history.',
  values: {
    MODEL: { description: 'By model.' },
    API_TYPE: { description: 'By provider.' },
    KIND: { description: 'Chat or embedding.' },
    STATUS: { description: 'Success or error.' },
    CACHE_STATUS: { description: 'Hit, miss, refresh or bypass.' },
    TEMPLATE: { description: 'By template name (null: not templated).' },
    TAG: { description: 'By tag: a call counts once in each of its tags; untagged calls are left out.' },
    DAY: { description: 'By UTC day.' },
    HOUR: { description: 'By UTC hour.' },
    TENANT: { description: 'By tenant.' },
    API_KEY: { description: 'By API key (null: the master key and open mode).' },
  } as const,
});

const CallStatsBucketRef = builder.objectRef<CallStatsBucket>('CallStatsBucket').implement({
  description: 'One group of calls. Fields of dimensions not grouped by are null. Spent tokens leave out cache hits, saved ones are the hits; USD spent and saved are exact Decimals (a hit spent 0 and saved what its answer cost).',
  fields: (t) => ({
    model: t.exposeString('model', { nullable: true, description: 'The model, when grouped by MODEL.' }),
    apiType: t.exposeString('apiType', { nullable: true, description: 'The provider, when grouped by API_TYPE.' }),
    kind: t.field({ type: CallKind, nullable: true, resolve: (bucket) => bucket.kind as 'CHAT' | 'EMBEDDING' | null, description: 'When grouped by KIND.' }),
    status: t.field({ type: CallStatus, nullable: true, resolve: (bucket) => bucket.status as 'SUCCESS' | 'ERROR' | null, description: 'When grouped by STATUS.' }),
    cacheStatus: t.field({
      type: CacheStatus,
      nullable: true,
      resolve: (bucket) => bucket.cacheStatus as 'HIT' | 'MISS' | 'REFRESH' | 'BYPASS' | null,
      description: 'When grouped by CACHE_STATUS.',
    }),
    template: t.exposeString('template', { nullable: true, description: 'The template name, when grouped by TEMPLATE.' }),
    tag: t.exposeString('tag', { nullable: true, description: 'The tag, when grouped by TAG.' }),
    tenant: t.exposeString('tenant', { nullable: true, description: 'The tenant, when grouped by TENANT.' }),
    apiKeyId: t.exposeID('apiKeyId', { nullable: true, description: 'The API key, when grouped by API_KEY.' }),
    day: t.field({ type: 'DateTime', nullable: true, resolve: (bucket) => bucket.day, description: 'Start of the UTC day, when grouped by DAY.' }),
    hour: t.field({ type: 'DateTime', nullable: true, resolve: (bucket) => bucket.hour, description: 'Start of the UTC hour, when grouped by HOUR.' }),
    calls: t.exposeInt('calls', { description: 'Calls in the group.' }),
    errors: t.exposeInt('errors', { description: 'Calls that failed.' }),
    cacheHits: t.exposeInt('cacheHits', { description: 'Calls answered from the cache.' }),
    cacheMisses: t.exposeInt('cacheMisses', { description: 'Calls that looked in the cache and called the provider.' }),
    hitRate: t.exposeFloat('hitRate', { nullable: true, description: 'cacheHits / (cacheHits + cacheMisses); null when no call used the cache.' }),
    promptTokens: t.exposeInt('promptTokens', { description: 'Prompt tokens paid for (cache hits left out).' }),
    completionTokens: t.exposeInt('completionTokens', { description: 'Completion tokens paid for (cache hits left out).' }),
    costUsd: t.expose('costUsd', { type: 'Decimal', nullable: true, description: 'USD spent, exact: the sum of the calls\' costUsd (0 for a cache hit); null when no call had a price.' }),
    tokensSaved: t.exposeInt('tokensSaved', { description: 'Tokens the cache hits did not pay for.' }),
    costSavedUsd: t.expose('costSavedUsd', { type: 'Decimal', nullable: true, description: 'USD the cache hits saved, exact: the sum of their costSavedUsd; null when none had a price.' }),
    latencyP50Ms: t.exposeFloat('latencyP50Ms', { nullable: true, description: 'Median latency. Exact (percentile_cont) when every call of the group is read from the history; approximate once rolled-up hours are in the range ([History] ROLLUP_INTERVAL_SECONDS): read from log-spaced latency buckets (ratio 1.02), within 1% of the exact value (measured at most 0.99%, see the README).' }),
    latencyP95Ms: t.exposeFloat('latencyP95Ms', { nullable: true, description: '95th percentile latency. Exact (percentile_cont) when every call of the group is read from the history; approximate once rolled-up hours are in the range ([History] ROLLUP_INTERVAL_SECONDS): read from log-spaced latency buckets (ratio 1.02), within 1% of the exact value (measured at most 0.99%, see the README).' }),
    latencyMaxMs: t.exposeFloat('latencyMaxMs', { nullable: true, description: 'Slowest call.' }),
  }),
});

builder.queryField('callStats', (t) =>
  t.field({
    ...access.viewer,
    type: [CallStatsBucketRef],
    description:
      'Aggregates of the call history, computed in the database: one bucket per combination of the groupBy dimensions (one bucket for all when empty). Complete hours are read from an hourly (and daily) rollup built in the background, the rest from the calls; counts and sums are the same either way, percentiles are approximate (within 1%) from the rollup. TAG, and filters on tags, errorCodes, cacheKeys or text, read every call.',
    args: {
      filter: t.arg({ type: CallFilterInput, description: 'Which calls.' }),
      groupBy: t.arg({ type: [CallStatsDimension], required: true, description: 'Dimensions to group by, in order.' }),
    },
    resolve: (_root, args, context, info) =>
      context.callStats(args.filter as CallFilter | null, args.groupBy, { percentiles: selectsField(info, ['latencyP50Ms', 'latencyP95Ms']) }),
  }),
);
