import { builder } from './builder.ts';
import './types/scalars.ts';
import './types/chat.ts';
import './types/tokens.ts';
import './types/settings.ts';
import './types/calls.ts';
import './types/cache.ts';
import './types/embeddings.ts';
import './types/providers.ts';
import './types/keys.ts';

// Root fields need ADMIN unless they open themselves with `access.viewer` or `access.member` (builder.ts).
builder.queryType({ description: 'Reads: token counts, embeddings, the cache, the call history and its analytics, settings and providers.', authScopes: { admin: true } });
builder.mutationType({ description: 'Calls to models, and the admin operations that change Callboard state.', authScopes: { admin: true } });
builder.subscriptionType({
  description: 'Streams over GraphQL over SSE (POST or GET /graphql with `accept: text/event-stream`): events as they happen.',
  authScopes: { admin: true },
});

export const schema = builder.toSchema({ sortSchema: false });
