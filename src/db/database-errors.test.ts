import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../test/support/database.ts';
import { createDatabase, type Database } from './database.ts';
import { classifyDatabaseError } from './database-errors.ts';

async function errorOf(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected the work to fail');
}

describe('classifyDatabaseError, on the errors the drivers really throw', () => {
  let lite: Database;
  beforeAll(async () => {
    // Any PGlite does; a copy of the run's migrated one starts without initdb.
    lite = (await createTestDatabase('pglite')).database;
  });
  afterAll(async () => {
    await lite.close().catch(() => {});
  });

  it('says "data" for what a row holds: invalid JSON text, an unpaired surrogate escape, a NUL, an int out of range', async () => {
    for (const [sql, parameters] of [
      ['SELECT $1::jsonb', ['{"a": ']],
      ['SELECT $1::jsonb', ['["bad \\ud800"]']],
      ['SELECT ($1::jsonb ->> 0)::text', ['["nul \\u0000"]']],
      ['SELECT $1::int', ['10000000000000']],
    ] as const) {
      expect(classifyDatabaseError(await errorOf(() => lite.query(sql, [...parameters]))), sql).toBe('data');
    }
  });

  it('says "other" for a statement no row can fix', async () => {
    expect(classifyDatabaseError(await errorOf(() => lite.query('SELECT * FROM "NoSuchTable"')))).toBe('other');
  });

  it('says "unreachable" for a refused connection, through pg and through Prisma, and for a closed PGlite', async () => {
    const nowhere = await createDatabase({ url: 'postgresql://postgres@127.0.0.1:9/none', dataDir: 'unused' });
    expect(classifyDatabaseError(await errorOf(() => nowhere.query('SELECT 1')))).toBe('unreachable');
    expect(classifyDatabaseError(await errorOf(() => nowhere.prisma.llmCall.count()))).toBe('unreachable');
    expect(classifyDatabaseError(await errorOf(() => nowhere.prisma.$queryRaw`SELECT 1`))).toBe('unreachable');
    await nowhere.close();
    const client = new pg.Client({ connectionString: 'postgresql://postgres@127.0.0.1:9/none' });
    expect(classifyDatabaseError(await errorOf(() => client.connect()))).toBe('unreachable');

    const { database: closed } = await createTestDatabase('pglite');
    await closed.close();
    expect(classifyDatabaseError(await errorOf(() => closed.query('SELECT 1')))).toBe('unreachable');
  });

  it('says "unreachable" for a server shutting down (57P01, 57P03)', () => {
    expect(classifyDatabaseError(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }))).toBe('unreachable');
    expect(classifyDatabaseError(Object.assign(new Error('the database system is shutting down'), { code: '57P03' }))).toBe('unreachable');
  });
});
