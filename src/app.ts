import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { createYoga, useReadinessCheck, type YogaServerInstance } from 'graphql-yoga';
import { createCacheEntryQueries } from './analytics/cache-entries.ts';
import { callStats } from './analytics/call-stats.ts';
import { createCallQueries } from './analytics/calls.ts';
import type { GraphQLContext } from './graphql/context.ts';
import { maskError } from './graphql/errors.ts';
import { createLoaders } from './graphql/loaders.ts';
import { exampleOperations } from './graphql/examples.ts';
import { createParseCaches, createQueryLimitPlugins } from './graphql/query-limits.ts';
import { schema } from './graphql/schema.ts';
import type { Services } from './services.ts';

export type App = YogaServerInstance<Record<string, never>, GraphQLContext>;

const actorHeader = 'x-callboard-actor';

type DropFirst<T extends unknown[]> = T extends [unknown, ...infer Rest] ? Rest : never;

/** Builds the HTTP application (GraphQL at /graphql, /health, /ready). It does not listen: tests call `app.fetch`. */
export function createApp(services: Services): App {
  const { loaded, database, logger } = services;
  const prisma = database.prisma;
  const shared = {
    services,
    calls: createCallQueries(database.analyticsQuery),
    cacheEntries: createCacheEntryQueries({ prisma, query: database.analyticsQuery, cache: services.cache, forget: services.forgetCacheEverywhere }),
    callStats: (...args: DropFirst<Parameters<typeof callStats>>) => callStats({ query: database.analyticsQuery }, ...args),
  };
  return createYoga<Record<string, never>, GraphQLContext>({
    schema,
    context: ({ request }) => ({
      ...shared,
      loaders: createLoaders(shared),
      actor: request.headers.get(actorHeader)?.trim().slice(0, 200) || 'anonymous',
      signal: request.signal,
    }),
    graphqlEndpoint: '/graphql',
    healthCheckEndpoint: '/health',
    landingPage: false,
    graphiql: loaded.config.server.graphiql ? { title: 'Callboard', defaultQuery: exampleOperations } : false,
    // GraphiQL's scripts come with the package: Yoga's default page loads them from a CDN, which a
    // machine without internet access (or a strict content policy) never reaches.
    renderGraphiQL,
    logging: {
      debug: (...args) => logger.debug(args.map(String).join(' ')),
      info: (...args) => logger.info(args.map(String).join(' ')),
      warn: (...args) => logger.warn(args.map(String).join(' ')),
      error: (...args) => {
        const error = args.find((arg) => arg instanceof Error);
        logger.error({ err: error }, error ? `unexpected error: ${error.message}` : args.map(String).join(' '));
      },
    },
    maskedErrors: { maskError },
    parserAndValidationCache: createParseCaches(),
    plugins: [useReadinessCheck({ endpoint: '/ready', check: () => database.isReachable() }), ...createQueryLimitPlugins(loaded.config.limits)],
  });
}
