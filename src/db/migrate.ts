import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Database, SqlSession } from './database.ts';

/** One migration in Prisma's layout: `<migrationsDir>/<name>/migration.sql`. */
export interface Migration {
  name: string;
  sql: string;
}

/** Reads the migrations of a Prisma migrations folder, in name (timestamp) order. */
export async function readMigrations(migrationsDir: string): Promise<Migration[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  const names = entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();
  return Promise.all(names.map(async (name) => ({ name, sql: await readFile(join(migrationsDir, name, 'migration.sql'), 'utf8') })));
}

// Any constant works; it only has to be the same for every Callboard instance on one database.
const migrationLockId = 0x0ca11b0a;

/**
 * Applies the migrations the database has not seen, each in its own transaction, recording them
 * in Prisma's own `_prisma_migrations` table so `prisma migrate deploy` agrees wherever it runs.
 * An advisory lock keeps instances that start together from applying the same migration twice.
 */
export async function migrate(database: Database, migrations: readonly Migration[]): Promise<{ applied: string[] }> {
  return database.withSession(async (session) => {
    await session.query('SELECT pg_advisory_lock($1)', [migrationLockId]);
    try {
      await session.exec(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
        "id" VARCHAR(36) PRIMARY KEY NOT NULL,
        "checksum" VARCHAR(64) NOT NULL,
        "finished_at" TIMESTAMPTZ,
        "migration_name" VARCHAR(255) NOT NULL,
        "logs" TEXT,
        "rolled_back_at" TIMESTAMPTZ,
        "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
        "applied_steps_count" INTEGER NOT NULL DEFAULT 0
      )`);
      const done = await appliedMigrations(session);
      const applied: string[] = [];
      for (const migration of migrations) {
        const checksum = createHash('sha256').update(migration.sql).digest('hex');
        const previous = done.get(migration.name);
        if (previous !== undefined) {
          if (previous !== checksum) {
            throw new Error(`Migration ${migration.name} was changed after it was applied (checksum differs); add a new migration instead.`);
          }
          continue;
        }
        await session.exec('BEGIN');
        try {
          await session.exec(migration.sql);
          await session.query(
            `INSERT INTO "_prisma_migrations" ("id", "checksum", "finished_at", "migration_name", "applied_steps_count")
             VALUES ($1, $2, now(), $3, 1)`,
            [randomUUID(), checksum, migration.name],
          );
          await session.exec('COMMIT');
        } catch (error) {
          await session.exec('ROLLBACK');
          throw new Error(`Migration ${migration.name} failed: ${(error as Error).message}`, { cause: error });
        }
        applied.push(migration.name);
      }
      return { applied };
    } finally {
      await session.query('SELECT pg_advisory_unlock($1)', [migrationLockId]);
    }
  });
}

async function appliedMigrations(session: SqlSession): Promise<Map<string, string>> {
  const rows = await session.query<{ migration_name: string; checksum: string }>(
    `SELECT "migration_name", "checksum" FROM "_prisma_migrations" WHERE "finished_at" IS NOT NULL AND "rolled_back_at" IS NULL`,
  );
  return new Map(rows.map((row) => [row.migration_name, row.checksum]));
}
