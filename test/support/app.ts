import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print, type GraphQLFormattedError } from 'graphql';
import { createApp, type App } from '../../src/app.ts';
import { loadConfig, type LoadedConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type DatabaseKind, type TestDatabase } from './database.ts';

/** A configuration built from defaults plus the given config.ini text and environment, as main.ts would. */
export function testConfig(ini = '', environment: Record<string, string> = {}): LoadedConfig {
  return loadConfig(ini ? [{ path: 'test.ini', text: ini }] : [], environment);
}

export interface GraphQLResponse<TResult> {
  data?: TResult | null;
  errors?: GraphQLFormattedError[];
}

export interface TestApp {
  app: App;
  testDatabase: TestDatabase;
  loaded: LoadedConfig;
  execute<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, variables?: TVariables): Promise<GraphQLResponse<TResult>>;
  dispose(): Promise<void>;
}

/** The real application on its own migrated database, called through `app.fetch` (no port). */
export async function createTestApp(kind: DatabaseKind, loaded: LoadedConfig = testConfig()): Promise<TestApp> {
  const testDatabase = await createTestDatabase(kind);
  const app = createApp({ ...loaded, database: testDatabase.database, logger: createLogger('silent') });
  return {
    app,
    testDatabase,
    loaded,
    execute: async (document, variables) => {
      const response = await app.fetch('http://callboard/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: print(document), variables }),
      });
      return response.json();
    },
    dispose: async () => {
      await app.dispose();
      await testDatabase.dispose();
    },
  };
}
