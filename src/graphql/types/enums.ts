import { builder } from '../builder.ts';

export const CacheMode = builder.enumType('CacheMode', {
  description: 'How a call uses the cache. The default follows CACHE_API_CALLS and the force_api_cache override: USE when on, BYPASS when off.',
  values: {
    USE: { description: 'Answer from the cache when it can; on a miss call the provider and store the answer.' },
    REFRESH: { description: 'Skip the read, call the provider, and overwrite the stored answer.' },
    BYPASS: { description: 'Neither read nor write the cache.' },
  } as const,
});

export const CacheStatus = builder.enumType('CacheStatus', {
  description: 'What the cache did for a call.',
  values: {
    HIT: { description: 'Answered from the cache, without calling the provider.' },
    MISS: { description: 'Not in the cache: the provider answered, and the answer was stored.' },
    REFRESH: { description: 'The provider answered and the stored answer was replaced.' },
    BYPASS: { description: 'The cache was not used.' },
  } as const,
});

export const CallKind = builder.enumType('CallKind', {
  description: 'What a call asked for.',
  values: { CHAT: { description: 'A chat completion.' }, EMBEDDING: { description: 'Embeddings of one or more texts.' } } as const,
});

export const CallStatus = builder.enumType('CallStatus', {
  description: 'How a call ended.',
  values: { SUCCESS: { description: 'The caller got an answer.' }, ERROR: { description: 'The call failed; errorCode says why.' } } as const,
});

export const OrderDirection = builder.enumType('OrderDirection', {
  description: 'Sort direction.',
  values: { ASC: { description: 'Smallest or oldest first.' }, DESC: { description: 'Largest or newest first.' } } as const,
});

export const Usage = builder
  .objectRef<{ promptTokens: number; completionTokens: number; totalTokens: number }>('Usage')
  .implement({
    description: 'Tokens as the provider counted them.',
    fields: (t) => ({
      promptTokens: t.exposeInt('promptTokens', { description: 'Tokens of the prompt (messages or texts).' }),
      completionTokens: t.exposeInt('completionTokens', { description: 'Tokens of the answer (0 for embeddings).' }),
      totalTokens: t.exposeInt('totalTokens', { description: 'Prompt and answer together.' }),
    }),
  });

