import { randomBytes } from 'node:crypto';
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

/** A fresh, empty database of its own, so test files can run in parallel. */
export async function createEmptyDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  if (kind === 'pglite') {
    const database = await createDatabase({ url: null, dataDir: 'memory://' });
    return { database, url: null, dispose: () => database.close() };
  }
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) throw new Error('TEST_DATABASE_URL is not set');
  const name = `callboard_test_${randomBytes(6).toString('hex')}`;
  await withClient(adminUrl, (client) => client.query(`CREATE DATABASE "${name}"`));
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

/** A fresh database with every migration applied. */
export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  const testDatabase = await createEmptyDatabase(kind);
  await migrate(testDatabase.database, await readMigrations(migrationsDir));
  return testDatabase;
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
