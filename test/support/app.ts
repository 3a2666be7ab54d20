import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print, type GraphQLFormattedError } from 'graphql';
import { createApp, type App } from '../../src/app.ts';
import { loadConfig, type LoadedConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services, type ServicesOptions } from '../../src/services.ts';
import { createTestDatabase, type DatabaseKind, type TestDatabase } from './database.ts';

/** A configuration built from defaults plus the given config.ini text and environment, as main.ts would. */
export function testConfig(ini = '', environment: Record<string, string> = {}): LoadedConfig {
  // Each test its own history spool (created only if used): a shared one would replay one test's rows into another's database.
  const spool = { CALLBOARD_HISTORY__SPOOL_DIR: join(tmpdir(), `callboard-spool-${randomBytes(6).toString('hex')}`) };
  return loadConfig(ini ? [{ path: 'test.ini', text: ini }] : [], { ...spool, ...environment });
}

export interface GraphQLResponse<TResult> {
  data?: TResult | null;
  errors?: GraphQLFormattedError[];
}

export interface TestApp {
  app: App;
  services: Services;
  testDatabase: TestDatabase;
  execute<TResult, TVariables>(
    document: TypedDocumentNode<TResult, TVariables>,
    variables?: TVariables,
    headers?: Record<string, string>,
  ): Promise<GraphQLResponse<TResult>>;
  dispose(): Promise<void>;
}

/** The real application on its own migrated database, called through `app.fetch` (no port). */
export async function createTestApp(
  kind: DatabaseKind,
  loaded: LoadedConfig = testConfig(),
  options: Omit<ServicesOptions, 'loaded' | 'database' | 'logger'> = {},
): Promise<TestApp> {
  const testDatabase = await createTestDatabase(kind);
  const services = await createServices({ loaded, database: testDatabase.database, logger: createLogger('silent'), ...options });
  const app = createApp(services);
  return {
    app,
    services,
    testDatabase,
    execute: async (document, variables, headers = {}) => {
      const response = await app.fetch('http://callboard/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ query: print(document), variables }),
      });
      return response.json();
    },
    dispose: async () => {
      await app.dispose();
      await services.close();
      await testDatabase.dispose();
    },
  };
}
