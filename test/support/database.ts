import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { migrate, readMigrations } from '../../src/db/migrate.ts';

export type DatabaseKind = 'pglite' | 'postgres';

export const migrationsDir = fileURLToPath(new URL('../../prisma/migrations', import.meta.url));
export const schemaPath = fileURLToPath(new URL('../../prisma/schema.prisma', import.meta.url));

/** PGlite always; Postgres too when TEST_DATABASE_URL is set (CI sets it). */
export const databaseKinds: DatabaseKind[] = process.env.TEST_DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];

export interface TestDatabase {
  database: Database;
  /** The Postgres URL of this test's own database; null for PGlite. */
  url: string | null;
  /** Closes the connection and drops the database. */
  dispose(): Promise<void>;
}

/**
 * Set by test/support/global-setup.ts (vitest's globalSetup) for the whole run: dumps of a new PGlite
 * data folder and of a migrated one, and the name of a migrated Postgres template database. Without
 * them (a script, a bench) each test database is made by initdb and migrated from empty.
 */
export const pgliteEmptyDumpVariable = 'CALLBOARD_TEST_PGLITE_EMPTY_DUMP';
export const pgliteDumpVariable = 'CALLBOARD_TEST_PGLITE_DUMP';
export const postgresTemplateVariable = 'CALLBOARD_TEST_POSTGRES_TEMPLATE';

const pgliteDumps = new Map<string, Promise<Blob>>();
/** The dump the variable names, read once per process; undefined without the variable. */
export function pgliteDump(variable: string): Promise<Blob> | undefined {
  const path = process.env[variable];
  if (!path) return undefined;
  if (!pgliteDumps.has(path)) pgliteDumps.set(path, readFile(path).then((bytes) => new Blob([bytes])));
  return pgliteDumps.get(path);
}

/** A fresh, empty database of its own, so test files can run in parallel. */
export async function createEmptyDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  return createDatabaseOfItsOwn(kind, false);
}

/** A fresh database with every migration applied. */
export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  const testDatabase = await createDatabaseOfItsOwn(kind, true);
  // On a copy of the migrated database this applies nothing: it only checks that the copy is up to date.
  await migrate(testDatabase.database, await readMigrations(migrationsDir));
  return testDatabase;
}

/** Empty, or a copy of the run's migrated database when there is one (`migrated`). */
async function createDatabaseOfItsOwn(kind: DatabaseKind, migrated: boolean): Promise<TestDatabase> {
  if (kind === 'pglite') {
    const dump = await pgliteDump(migrated ? pgliteDumpVariable : pgliteEmptyDumpVariable);
    const database = await createDatabase({ url: null, dataDir: 'memory://', pgliteDump: dump });
    return { database, url: null, dispose: () => database.close() };
  }
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) throw new Error('TEST_DATABASE_URL is not set');
  const name = `callboard_test_${randomBytes(6).toString('hex')}`;
  const template = migrated ? process.env[postgresTemplateVariable] : undefined;
  await withClient(adminUrl, (client) => client.query(template ? `CREATE DATABASE "${name}" TEMPLATE "${template}"` : `CREATE DATABASE "${name}"`));
  const url = databaseUrlFor(adminUrl, name);
  const database = await createDatabase({ url, dataDir: 'unused', poolSize: 4 });
  return {
    database,
    url,
    dispose: async () => {
      await database.close();
      await withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
    },
  };
}

/** The URL of `database` on the server of `adminUrl`. */
export function databaseUrlFor(adminUrl: string, database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

/** One plain connection for `work`, closed after it. */
export async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}
