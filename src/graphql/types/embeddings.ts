import type { EmbedResult, EmbeddingResult } from '../../llm/client.ts';
import { access, builder } from '../builder.ts';
import { paidField } from '../paid-fields.ts';
import { CacheMode, CacheStatus, Usage } from './enums.ts';
import { LlmCall } from './refs.ts';

interface EmbeddingShape extends EmbeddingResult {
  usage: EmbedResult['usage'];
  call: EmbedResult['call'];
  cacheReadFailed: EmbedResult['cacheReadFailed'];
}

const Embedding = builder.objectRef<EmbeddingShape>('Embedding').implement({
  description: 'The embedding vector of one text.',
  fields: (t) => ({
    vector: t.floatList({ resolve: (embedding) => embedding.vector, description: 'The vector.' }),
    dimensions: t.int({ resolve: (embedding) => embedding.vector.length, description: 'Its length.' }),
    model: t.exposeString('model', { description: 'The model that made it.' }),
    cacheStatus: t.field({ type: CacheStatus, resolve: (embedding) => embedding.cacheStatus, description: 'What the cache did for this text.' }),
    cacheReadFailed: t.exposeBoolean('cacheReadFailed', {
      description: "True when the cache's database could not be read for the call: the provider answered instead (cacheStatus MISS).",
    }),
    usage: t.field({
      type: Usage,
      nullable: true,
      resolve: (embedding) => embedding.usage,
      description: 'Tokens of the call: for the embedding query this text alone, for embeddings the whole batch.',
    }),
    call: t.field({ type: LlmCall, resolve: (embedding) => embedding.call, description: 'The history row of the call (one per batch).' }),
  }),
});

const commonArguments = (t: Parameters<Parameters<typeof builder.queryFields>[0]>[0]) => ({
  model: t.arg.string({ description: 'The embedding model (for Azure: the deployment). Default: EMBEDDING_MODEL.' }),
  apiType: t.arg.string({ description: 'The provider. Default: API_TYPE.' }),
  cache: t.arg({ type: CacheMode, description: 'How to use the cache, per text. Default: from CACHE_API_CALLS.' }),
  tags: t.arg.stringList({ description: 'Labels recorded in the history.' }),
  deadlineSeconds: t.arg.float({ description: 'Seconds for the whole call, every attempt and wait included; at most CALL_DEADLINE, its default. When it passes: DEADLINE_EXCEEDED.' }),
  timeoutSeconds: t.arg.float({ description: 'Seconds per attempt; at most TIMEOUT, its default.' }),
  maxAttempts: t.arg.int({ description: 'Upstream attempts at most; at most MAX_ATTEMPTS, its default.' }),
});

builder.queryFields((t) => ({
  embedding: t.field({
    ...access.member,
    type: Embedding,
    description: "TinyTroupe's get_embedding: the vector of one text, with the cache, retries and history of chat calls.",
    extensions: paidField,
    args: { text: t.arg.string({ required: true, description: 'The text to embed.' }), ...commonArguments(t) },
    resolve: async (_root, args, context) => {
      const result = await context.services.llm.embed({ ...args, texts: [args.text], caller: context.caller, signal: context.signal, requestLog: context.requestLog });
      return { ...result.embeddings[0]!, usage: result.usage, call: result.call, cacheReadFailed: result.cacheReadFailed };
    },
  }),
  embeddings: t.field({
    ...access.member,
    type: [Embedding],
    description: 'The vectors of several texts in one upstream call (only the texts not in the cache are sent), in the order given.',
    extensions: paidField,
    // Each text is one vector in the answer.
    complexity: (args) => ({ field: 1, multiplier: args.texts.length }),
    args: { texts: t.arg.stringList({ required: true, description: 'The texts to embed, at most 2048.' }), ...commonArguments(t) },
    resolve: async (_root, args, context) => {
      const result = await context.services.llm.embed({ ...args, caller: context.caller, signal: context.signal, requestLog: context.requestLog });
      return result.embeddings.map((embedding) => ({ ...embedding, usage: result.usage, call: result.call, cacheReadFailed: result.cacheReadFailed }));
    },
  }),
}));
