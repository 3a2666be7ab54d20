import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { createDatabase, type Database, type SqlSession } from '../../src/db/database.ts';
import { migrate, readMigrations, type Migration } from '../../src/db/migrate.ts';
import { databaseUrlFor, migrationsDir, pgliteDumpVariable, postgresTemplateVariable, withClient } from './database.ts';

/**
 * Once per test run (vitest's globalSetup): one database with every migration applied, that each test
 * database then starts from instead of migrating an empty one. For PGlite a dump of its data folder
 * (booting from it skips initdb, the seconds of CPU each new PGlite costs); for Postgres a template
 * database (CREATE DATABASE ... TEMPLATE copies it). test/support/database.ts still runs the
 * migrations on each copy, which finds nothing left to apply.
 *
 * The PGlite dump is kept in node_modules/.cache, named by the migrations and PGlite's version, so
 * that the next runs (a single file too) skip even that one initdb.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const migrations = await readMigrations(migrationsDir);
  process.env[pgliteDumpVariable] = await migratedPgliteDump(migrations);

  const adminUrl = process.env.TEST_DATABASE_URL;
  let template: string | undefined;
  if (adminUrl) {
    template = `callboard_template_${randomBytes(6).toString('hex')}`;
    await withClient(adminUrl, (client) => client.query(`CREATE DATABASE "${template}"`));
    const database = await createDatabase({ url: databaseUrlFor(adminUrl, template), dataDir: 'unused', poolSize: 1 });
    try {
      await migrate(database, migrations);
    } finally {
      await database.close();
    }
    process.env[postgresTemplateVariable] = template;
  }

  return async () => {
    if (adminUrl && template) await withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${template}" WITH (FORCE)`));
  };
}

const cacheFolder = fileURLToPath(new URL('../../node_modules/.cache/callboard-tests', import.meta.url));

/** The path of a dump of a migrated PGlite data folder, made now unless the cache has it already. */
async function migratedPgliteDump(migrations: Migration[]): Promise<string> {
  const pglitePackage = join(dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite')), '..', 'package.json');
  const hash = createHash('sha256').update(await readFile(pglitePackage));
  for (const migration of migrations) hash.update(`${migration.name}\0${migration.sql}\0`);
  const path = join(cacheFolder, `pglite-migrated-${hash.digest('hex').slice(0, 16)}.tar`);
  if (await access(path).then(() => true, () => false)) return path;

  const pglite = new PGlite();
  try {
    const session: SqlSession = {
      query: async <Row,>(sql: string, parameters?: unknown[]) => (await pglite.query<Row>(sql, parameters)).rows,
      exec: async (script) => {
        await pglite.exec(script);
      },
    };
    await migrate({ withSession: (work) => work(session) } as Pick<Database, 'withSession'> as Database, migrations);
    const dump = await pglite.dumpDataDir('none');
    await mkdir(cacheFolder, { recursive: true });
    // Written aside, then renamed: another run reading the cache never sees half a file.
    const partial = `${path}.${randomBytes(4).toString('hex')}.partial`;
    await writeFile(partial, new Uint8Array(await dump.arrayBuffer()));
    await rename(partial, path);
    return path;
  } finally {
    await pglite.close();
  }
}
