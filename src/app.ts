import { fileURLToPath } from 'node:url';
import { execute, subscribe } from 'graphql';
import { createYoga, useReadinessCheck, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { createCacheEntryQueries } from './analytics/cache-entries.ts';
import { callStats } from './analytics/call-stats.ts';
import { createCallQueries, withinTenant } from './analytics/calls.ts';
import { createDoor } from './auth/door.ts';
import { callerOf, readScope } from './auth/identity.ts';
import type { GraphQLContext } from './graphql/context.ts';
import { maskError, useSubscriptionRefusals } from './graphql/errors.ts';
import { createLoaders } from './graphql/loaders.ts';
import { exampleOperations } from './graphql/examples.ts';
import { createParseCaches, createQueryLimitPlugins } from './graphql/query-limits.ts';
import { schema } from './graphql/schema.ts';
import { useBodyLimit } from './http/body-limit.ts';
import { createCorsOptions, useBrowserSafety } from './http/browser-safety.ts';
import { useDashboard } from './http/dashboard.ts';
import { createGraphiQL } from './http/graphiql.ts';
import { useOpenAiDoor } from './http/openai-door.ts';
import { useMetricsEndpoint } from './observability/metrics-endpoint.ts';
import { createRequestLogging } from './observability/request-log.ts';
import type { Tracing } from './observability/tracing.ts';
import type { Services } from './services.ts';

export type App = YogaServerInstance<Record<string, never>, GraphQLContext>;

const actorHeader = 'x-callboard-actor';
/** The built dashboard (scripts/build.mjs): `../dist/dashboard` from src/app.ts and from its bundle, dist/main.js, alike. */
const dashboardDirectory = fileURLToPath(new URL('../dist/dashboard/', import.meta.url));

type DropFirst<T extends unknown[]> = T extends [unknown, ...infer Rest] ? Rest : never;

/**
 * graphql-js's own execute and subscribe instead of Yoga's default (@graphql-tools/executor, which
 * adds @defer/@stream, which Callboard's schema does not declare, and copies every input value for
 * them): less work per request.
 */
function useGraphqlJsExecution(): Plugin {
  return {
    onExecute: ({ setExecuteFn }) => setExecuteFn(execute),
    onSubscribe: ({ setSubscribeFn }) => setSubscribeFn(subscribe),
  };
}

export interface AppOptions {
  /** OpenTelemetry tracing (startTracing), when OTEL_EXPORTER_OTLP_ENDPOINT is set. */
  tracing?: Tracing | null;
}

/** Builds the HTTP application (GraphQL at /graphql, /v1, /metrics, /dashboard, /health, /ready). It does not listen: tests call `app.fetch`. */
export function createApp(services: Services, options: AppOptions = {}): App {
  const { loaded, database, logger } = services;
  const prisma = database.prisma;
  const door = createDoor(services.authenticator);
  const requestLogging = createRequestLogging({ logger, identityOf: door.identityIfAny, tracing: options.tracing });
  const { server } = loaded.config;
  const graphiql = server.graphiql ? createGraphiQL() : null;
  return createYoga<Record<string, never>, GraphQLContext>({
    schema,
    context: ({ request }): GraphQLContext => {
      const identity = door.identityOf(request);
      const tenant = readScope(identity);
      const note = request.headers.get(actorHeader)?.trim().slice(0, 200);
      const queries = {
        calls: createCallQueries(database.analyticsQuery, tenant),
        cacheEntries: createCacheEntryQueries({ prisma, query: database.analyticsQuery, tenant, cache: services.cache, forget: services.forgetCacheEverywhere }),
      };
      const context: GraphQLContext = {
        services,
        identity,
        caller: callerOf(identity),
        ...queries,
        loaders: createLoaders({ ...queries, limits: services.limits }),
        renewLoaders: () => {
          context.loaders = createLoaders({ ...queries, limits: services.limits });
        },
        watchCalls: (filter) => services.callEvents.subscribe(tenant, filter),
        callStats: (filter, ...rest: DropFirst<DropFirst<Parameters<typeof callStats>>>) =>
          callStats({ query: database.analyticsQuery }, withinTenant(filter, tenant), ...rest),
        actor: note ? `${identity.label} (note: ${note})` : identity.label,
        signal: request.signal,
        requestLog: requestLogging.of(request),
      };
      return context;
    },
    graphqlEndpoint: '/graphql',
    healthCheckEndpoint: '/health',
    landingPage: false,
    graphiql: graphiql ? { title: 'Callboard', defaultQuery: exampleOperations } : false,
    // GraphiQL's scripts come with the package: Yoga's default page loads them from a CDN, which a
    // machine without internet access (or a strict content policy) never reaches. The package's
    // own page inlines its 9 MB into every load: src/http/graphiql.ts serves a small page instead,
    // and the files once, cached and compressed, read on the first request, not at start.
    ...(graphiql ? { renderGraphiQL: graphiql.render } : {}),
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
    cors: createCorsOptions(server.corsOrigins),
    // No field takes an upload, and multipart is a body any web page can post.
    multipart: false,
    // useBodyLimit below bounds bodies instead, with a Callboard code.
    maxRequestBodySize: false,
    parserAndValidationCache: createParseCaches(),
    plugins: [
      // First: every answer carries its x-request-id, and every request writes its line.
      requestLogging.plugin,
      // GraphiQL's files hold no data, as its page (which Yoga answers before any plugin): any host, no key.
      ...(graphiql ? [graphiql.plugin] : []),
      // A rebound Host is refused before anyone is asked for a key.
      useBrowserSafety({ corsOrigins: server.corsOrigins, allowedHosts: server.allowedHosts, checkHost: services.authenticator.openMode }),
      // The dashboard's page and files hold no data: served before the door asks for a key.
      useDashboard({ directory: dashboardDirectory }),
      useBodyLimit(loaded.config.limits.maxBodyBytes),
      door.plugin,
      useOpenAiDoor({ services, identityOf: door.identityOf, requestLogOf: requestLogging.of, maxBodyBytes: loaded.config.limits.maxBodyBytes }),
      // With [Metrics] PORT set, /metrics is served on that port only (main.ts), and here it is not found.
      ...(loaded.config.metrics.port === null ? [useMetricsEndpoint({ registry: services.metrics.registry, identityOf: door.identityOf })] : []),
      useReadinessCheck({ endpoint: '/ready', check: () => database.isReachable() }),
      ...createQueryLimitPlugins(loaded.config.limits),
      useSubscriptionRefusals(),
      useGraphqlJsExecution(),
    ],
  });
}
