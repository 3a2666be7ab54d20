import { createYoga, useReadinessCheck, type YogaServerInstance } from 'graphql-yoga';
import type { Config, Setting } from './config/config.ts';
import type { Database } from './db/database.ts';
import type { GraphQLContext } from './graphql/context.ts';
import { maskError } from './graphql/errors.ts';
import { schema } from './graphql/schema.ts';
import type { Logger } from './logger.ts';

export interface AppDependencies {
  config: Config;
  settings: readonly Setting[];
  database: Database;
  logger: Logger;
}

export type App = YogaServerInstance<Record<string, never>, GraphQLContext>;

const exampleOperations = `# Welcome to Callboard. Pick an operation with the play button.

query CountCookbookTokens {
  tokenCount(
    model: "gpt-4o"
    messages: [
      { role: SYSTEM, content: "You are a helpful assistant." }
      { role: USER, content: "How many tokens is this?" }
    ]
  ) {
    tokens
    encoding
  }
}

query Settings {
  settings {
    section
    key
    value
    source
    origin
  }
}
`;

/** Builds the HTTP application (GraphQL at /graphql, /health, /ready). It does not listen: tests call `app.fetch`. */
export function createApp(dependencies: AppDependencies): App {
  const { config, settings, database, logger } = dependencies;
  const context: GraphQLContext = { config, settings };
  return createYoga<Record<string, never>, GraphQLContext>({
    schema,
    context: () => context,
    graphqlEndpoint: '/graphql',
    healthCheckEndpoint: '/health',
    landingPage: false,
    graphiql: config.server.graphiql ? { title: 'Callboard', defaultQuery: exampleOperations } : false,
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
    plugins: [useReadinessCheck({ endpoint: '/ready', check: () => database.isReachable() })],
  });
}
