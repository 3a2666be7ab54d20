import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { createDatabase, type Database, type SqlSession } from '../../src/db/database.ts';
import { migrate, readMigrations, type Migration } from '../../src/db/migrate.ts';
import { databaseUrlFor, migrationsDir, pgliteDumpVariable, pgliteEmptyDumpVariable, postgresTemplateVariable, withClient } from './database.ts';

/**
 * Once per test run (vitest's globalSetup): one database with every migration applied, that each test
 * database then starts from instead of migrating an empty one. For PGlite a dump of its data folder
 * (booting from it skips initdb, the seconds of CPU each new PGlite costs); for Postgres a template
 * database (CREATE DATABASE ... TEMPLATE copies it). test/support/database.ts still runs the
 * migrations on each copy, which finds nothing left to apply.
 *
 * The PGlite dumps (one migrated, one as initdb left it, for the tests of migrating) are kept in
 * node_modules/.cache, named by PGlite's version and the migrations, so that the next runs (a single
 * file too) skip even that one initdb.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const migrations = await readMigrations(migrationsDir);
  const dumps = await pgliteDumps(migrations);
  process.env[pgliteEmptyDumpVariable] = dumps.empty;
  process.env[pgliteDumpVariable] = dumps.migrated;

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

/** The paths of dumps of a new PGlite data folder and of a migrated one, made now unless the cache has them already. */
async function pgliteDumps(migrations: Migration[]): Promise<{ empty: string; migrated: string }> {
  const pglitePackage = join(dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite')), '..', 'package.json');
  const hash = createHash('sha256').update(await readFile(pglitePackage));
  const empty = join(cacheFolder, `pglite-empty-${hash.copy().digest('hex').slice(0, 16)}.tar`);
  for (const migration of migrations) hash.update(`${migration.name}\0${migration.sql}\0`);
  const migrated = join(cacheFolder, `pglite-migrated-${hash.digest('hex').slice(0, 16)}.tar`);
  const exists = (path: string) => access(path).then(() => true, () => false);
  if ((await exists(empty)) && (await exists(migrated))) return { empty, migrated };

  await mkdir(cacheFolder, { recursive: true });
  const pglite = new PGlite();
  try {
    await writeDump(pglite, empty);
    const session: SqlSession = {
      query: async <Row,>(sql: string, parameters?: unknown[]) => (await pglite.query<Row>(sql, parameters)).rows,
      exec: async (script) => {
        await pglite.exec(script);
      },
    };
    await migrate({ withSession: (work) => work(session) } as Pick<Database, 'withSession'> as Database, migrations);
    await writeDump(pglite, migrated);
    return { empty, migrated };
  } finally {
    await pglite.close();
  }
}

async function writeDump(pglite: PGlite, path: string): Promise<void> {
  const dump = await pglite.dumpDataDir('none');
  // Written aside, then renamed: another run reading the cache never sees half a file.
  const partial = `${path}.${randomBytes(4).toString('hex')}.partial`;
  await writeFile(partial, new Uint8Array(await dump.arrayBuffer()));
  await rename(partial, path);
}
