import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { migrate, readMigrations } from '../../src/db/migrate.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services } from '../../src/services.ts';
import { testConfig } from '../support/app.ts';
import { migrationsDir, withClient } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { startThrowawayPostgres, throwawayPostgresUnsupported, type ThrowawayPostgres } from '../support/throwaway-postgres.ts';

const unsupported = throwawayPostgresUnsupported();
if (unsupported) console.warn(`skipping the database outage test: ${unsupported}`);

const sendMessage = `mutation OutageSendMessage($input: SendMessageInput!) {
  sendMessage(input: $input) { message { content } cacheStatus cacheReadFailed call { id } }
}`;

interface LogLine {
  level: number;
  msg: string;
}

const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

describe.skipIf(unsupported !== null)('a Postgres outage under load', () => {
  let cluster: ThrowawayPostgres;
  let database: Database;
  let fake: FakeOpenAI;
  let services: Services;
  let app: App;
  let spoolDir: string;
  const logs: LogLine[] = [];

  beforeAll(async () => {
    [cluster, fake, spoolDir] = await Promise.all([startThrowawayPostgres(), startFakeOpenAI(), mkdtemp(join(tmpdir(), 'callboard-outage-spool-'))]);
    database = await createDatabase({ url: cluster.url, dataDir: 'unused', poolSize: 10 });
    await migrate(database, await readMigrations(migrationsDir));
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as LogLine);
        done();
      },
    });
    const loaded = testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nCACHE_API_CALLS=True\n`, {
      OPENAI_API_KEY: 'sk-outage-test',
      CALLBOARD_HISTORY__SPOOL_DIR: spoolDir,
    });
    services = await createServices({ loaded, database, logger: createLogger('info', stream) });
    app = createApp(services);
  }, 60_000);

  afterAll(async () => {
    await app?.dispose();
    await services?.close();
    await database?.close();
    await fake?.close();
    await cluster?.dispose();
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  }, 60_000);

  const graphql = async (query: string, variables: Record<string, unknown> = {}) => {
    const response = await app.fetch('http://callboard/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as { data?: any; errors?: { message: string; extensions?: { code?: string } }[] };
  };

  it('answers every call, writes each call once when the database is back, and logs the outage in a few lines', async () => {
    const answers: Promise<Awaited<ReturnType<typeof graphql>>>[] = [];
    let sent = 0;
    // 50 calls a second; one in three repeats an earlier text (a cache hit), the rest are misses that read the database.
    const load = setInterval(() => {
      const number = sent++;
      const content = number % 3 === 0 ? `repeated ${number % 10}` : `unique ${number}`;
      answers.push(graphql(sendMessage, { input: { messages: [{ role: 'USER', content }], cache: 'USE' } }));
    }, 20);
    const started = Date.now();

    await sleep(2000);
    await cluster.stop();
    const stoppedAt = Date.now();
    const ready = await app.fetch('http://callboard/ready');
    const queryStarted = Date.now();
    const analytics = await graphql('{ calls(first: 1) { edges { node { id } } } }');
    const queryMs = Date.now() - queryStarted;
    const embedding = await graphql('{ embedding(text: "while the database is down", cache: USE) { dimensions cacheStatus cacheReadFailed call { id } } }');
    await sleep(Math.max(0, 3000 - (Date.now() - stoppedAt)));
    await cluster.start();
    const outageMs = Date.now() - stoppedAt;
    await sleep(Math.max(0, 8000 - (Date.now() - started)));
    clearInterval(load);
    const results = await Promise.all(answers);

    expect(ready.status).toBe(503);
    expect(analytics.errors?.[0]?.extensions?.code).toBe('DATABASE_UNAVAILABLE');
    expect(queryMs).toBeLessThan(5000);
    expect(embedding.data?.embedding).toMatchObject({ cacheStatus: 'MISS', cacheReadFailed: true });

    const failed = results.filter((result) => result.errors || !result.data?.sendMessage);
    expect(failed, 'calls that failed').toEqual([]);
    const ids = [...results.map((result) => result.data.sendMessage.call.id as string), embedding.data.embedding.call.id as string];
    expect(new Set(ids).size).toBe(ids.length);
    const readFailures = results.filter((result) => result.data.sendMessage.cacheReadFailed).length;
    expect(readFailures, 'misses answered while the cache could not be read').toBeGreaterThan(0);

    // The writer retries at most a second apart, then writes its spool.
    const deadline = Date.now() + 15_000;
    let counts = { rows: 0, distinct: 0, ours: 0 };
    while (Date.now() < deadline) {
      await services.history.flush();
      counts = await withClient(cluster.url, async (client) => {
        const { rows } = await client.query<{ rows: string; distinct: string; ours: string }>(
          'SELECT count(*) AS rows, count(DISTINCT id) AS distinct, count(*) FILTER (WHERE id = ANY($1::uuid[])) AS ours FROM "LlmCall"',
          [ids],
        );
        return { rows: Number(rows[0]!.rows), distinct: Number(rows[0]!.distinct), ours: Number(rows[0]!.ours) };
      });
      if (counts.ours === ids.length) break;
      await sleep(200);
    }
    expect(counts).toEqual({ rows: ids.length, distinct: ids.length, ours: ids.length });

    const loud = logs.filter((line) => line.level >= 40);
    console.info(
      `outage test: ${ids.length} calls, database down ${(outageMs / 1000).toFixed(1)} s, ${readFailures} answered with cacheReadFailed, ` +
        `${loud.length} warn/error log lines: ${JSON.stringify(loud.map((line) => line.msg))}`,
    );
    expect(loud.length, 'warn and error log lines').toBeLessThanOrEqual(6);
    expect(logs.some((line) => /^history written: \d+ rows after an outage of/.test(line.msg))).toBe(true);
  }, 60_000);
});
