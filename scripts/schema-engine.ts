import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { bindMigrationAwareSqlAdapterFactory } from '@prisma/driver-adapter-utils';
import * as engineModule from '@prisma/schema-engine-wasm/schema_engine_bg';
import { PrismaPGlite } from 'pglite-prisma-adapter';
import { readMigrations } from '../src/db/migrate.ts';

// Prisma's schema engine, compiled to WebAssembly, with a throwaway in-memory PGlite as its shadow
// database: no native binary to download and no Postgres server needed to write a migration.
// The package's own entry imports the .wasm as an ES module, which Node 20 only does behind a
// flag, so the module is instantiated here by hand.
let ready: Promise<void> | undefined;
function loadEngine(): Promise<void> {
  ready ??= (async () => {
    const entry = createRequire(import.meta.url).resolve('@prisma/schema-engine-wasm');
    const bytes = await readFile(join(dirname(entry), 'schema_engine_bg.wasm'));
    const { instance } = await WebAssembly.instantiate(bytes, { './schema_engine_bg.js': engineModule as unknown as WebAssembly.ModuleImports });
    engineModule.__wbg_set_wasm(instance.exports);
    (instance.exports.__wbindgen_start as () => void)();
  })();
  return ready;
}

/** The SQL that takes a database from the migrations in `migrationsDir` to `schemaPath`; '' when they agree. */
export async function diffMigrationsToSchema(options: {
  schemaPath: string;
  migrationsDir: string;
  /** A dump (PGlite's dumpDataDir) of a new, empty data folder to start the shadow database from, sparing its initdb (tests). */
  shadowDump?: Blob;
}): Promise<string> {
  await loadEngine();
  const content = await readFile(options.schemaPath, 'utf8');
  const migrations = await readMigrations(options.migrationsDir).catch(() => []);
  const shadow = new PGlite(options.shadowDump ? { loadDataDir: options.shadowDump } : undefined);
  try {
    const adapter = bindMigrationAwareSqlAdapterFactory(new PrismaPGlite(shadow));
    const engine = await engineModule.SchemaEngine.new({ datamodels: [[options.schemaPath, content]] }, () => {}, adapter);
    const result = await engine.diff({
      from: {
        tag: 'migrations',
        baseDir: options.migrationsDir,
        lockfile: { path: 'migration_lock.toml', content: 'provider = "postgresql"\n' },
        shadowDbInitScript: '',
        migrationDirectories: migrations.map((migration) => ({
          path: migration.name,
          migrationFile: { path: 'migration.sql', content: { tag: 'ok', value: migration.sql } },
        })),
      },
      to: { tag: 'schemaDatamodel', files: [{ path: options.schemaPath, content }] },
      script: true,
      exitCode: true,
      filters: { externalTables: [], externalEnums: [] },
    });
    engine.free();
    return result.exitCode === 0 ? '' : (result.stdout ?? '');
  } finally {
    await shadow.close();
  }
}
