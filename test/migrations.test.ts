import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, readMigrations, type Migration } from '../src/db/migrate.ts';
import { diffMigrationsToSchema } from '../scripts/schema-engine.ts';
import { createEmptyDatabase, databaseKinds, migrationsDir, pgliteDump, pgliteEmptyDumpVariable, schemaPath, type TestDatabase } from './support/database.ts';

describe('prisma/migrations', () => {
  it('match prisma/schema.prisma (run `npm run migration:new -- <name>` after changing the schema)', async () => {
    const pending = await diffMigrationsToSchema({ schemaPath, migrationsDir, shadowDump: await pgliteDump(pgliteEmptyDumpVariable) });
    expect(pending).toBe('');
    // Prisma's schema engine (WebAssembly) loads and diffs on a shadow database: tens of seconds on a busy machine.
  }, 90_000);
});

describe.each(databaseKinds)('migrate on %s', (kind) => {
  let testDatabase: TestDatabase;
  let migrations: Migration[];

  beforeAll(async () => {
    testDatabase = await createEmptyDatabase(kind);
    migrations = await readMigrations(migrationsDir);
  });
  afterAll(() => testDatabase.dispose());

  it('applies every migration once, records it as Prisma does, and is idempotent', async () => {
    const first = await migrate(testDatabase.database, migrations);
    expect(first.applied).toEqual(migrations.map((migration) => migration.name));
    const second = await migrate(testDatabase.database, migrations);
    expect(second.applied).toEqual([]);
    const rows = await testDatabase.database.withSession((session) =>
      session.query<{ migration_name: string; checksum: string }>('SELECT migration_name, checksum FROM "_prisma_migrations" ORDER BY migration_name'),
    );
    expect(rows.map((row) => row.migration_name)).toEqual(first.applied);
    expect(rows.every((row) => /^[0-9a-f]{64}$/.test(row.checksum))).toBe(true);
    expect(await testDatabase.database.prisma.llmCall.count()).toBe(0);
  });

  it('refuses a migration whose text changed after it was applied', async () => {
    const changed = migrations.map((migration, index) => (index === 0 ? { ...migration, sql: `${migration.sql}\n-- edited` } : migration));
    await expect(migrate(testDatabase.database, changed)).rejects.toThrow(/was changed after it was applied/);
  });

  it('rolls a failing migration back and leaves no record of it', async () => {
    const broken = [...migrations, { name: '99999999999999_broken', sql: 'CREATE TABLE "Half" (id int); SELECT no_such_function();' }];
    await expect(migrate(testDatabase.database, broken)).rejects.toThrow(/99999999999999_broken failed/);
    const tables = await testDatabase.database.withSession((session) => session.query(`SELECT 1 FROM pg_tables WHERE tablename = 'Half'`));
    expect(tables).toHaveLength(0);
    expect((await migrate(testDatabase.database, migrations)).applied).toEqual([]);
  });

  it('exact_money: turns float costs into numerics without their noise, and moves what a hit saved out of costUsd', async () => {
    const moneyIndex = migrations.findIndex((migration) => migration.name.endsWith('_exact_money'));
    expect(moneyIndex).toBeGreaterThan(0);
    const fresh = await createEmptyDatabase(kind);
    try {
      await migrate(fresh.database, migrations.slice(0, moneyIndex));
      // As the float8 columns held them: 0.0002109 written as a sum of floats, and a hit that recorded what it saved.
      await fresh.database.query(
        `INSERT INTO "LlmCall" ("id", "kind", "apiType", "model", "status", "cacheStatus", "latencyMs", "costUsd") VALUES
           ('0190f3b2-0000-7000-8000-0000000000a1', 'CHAT', 'openai', 'gpt-4o-mini', 'SUCCESS', 'MISS', 1, 0.00021089999999999987::float8),
           ('0190f3b2-0000-7000-8000-0000000000a2', 'CHAT', 'openai', 'gpt-4o-mini', 'SUCCESS', 'HIT', 1, 0.00021089999999999987::float8),
           ('0190f3b2-0000-7000-8000-0000000000a3', 'CHAT', 'openai', 'my-llama', 'SUCCESS', 'HIT', 1, NULL)`,
      );
      await fresh.database.query(`INSERT INTO "LlmCallRollupState" ("id", "rolledUntil") VALUES (1, now())`);
      expect((await migrate(fresh.database, migrations)).applied).toEqual(migrations.slice(moneyIndex).map((migration) => migration.name));
      const rows = await fresh.database.query<{ cacheStatus: string; costUsd: string | null; costSavedUsd: string | null }>(
        `SELECT "cacheStatus"::text AS "cacheStatus", trim_scale("costUsd")::text AS "costUsd", trim_scale("costSavedUsd")::text AS "costSavedUsd" FROM "LlmCall" ORDER BY "id"`,
      );
      expect(rows).toEqual([
        { cacheStatus: 'MISS', costUsd: '0.0002109', costSavedUsd: null },
        { cacheStatus: 'HIT', costUsd: '0', costSavedUsd: '0.0002109' },
        { cacheStatus: 'HIT', costUsd: '0', costSavedUsd: null },
      ]);
      // The rollup's float sums are dropped: it is rebuilt from the exact calls.
      expect(await fresh.database.query('SELECT 1 FROM "LlmCallRollupState"')).toEqual([]);
    } finally {
      await fresh.dispose();
    }
  });
});
