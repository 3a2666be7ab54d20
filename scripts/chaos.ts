/**
 * What a database outage and a kill -9 cost: runs the real server (src/main.ts) on a throw-away
 * Postgres cluster with the fake upstream, sends calls at a steady rate, stops the cluster for a
 * while, starts it again, then kills the server with SIGKILL (once while the database is up, once
 * while it is down) and restarts it. Prints the calls answered, the rows lost or duplicated, the
 * server's memory and its log lines. Needs root and postgresql-common (pg_createcluster).
 *
 *   npm run chaos -- [--rate 100] [--outage 60] [--warmup 5] [--after 10]
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { withClient } from '../test/support/database.ts';
import { startFakeOpenAI } from '../test/support/fake-openai.ts';
import { startServerProcess, type ServerProcess } from '../test/support/server-process.ts';
import { startThrowawayPostgres, throwawayPostgresUnsupported } from '../test/support/throwaway-postgres.ts';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '100' },
    outage: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '5' },
    after: { type: 'string', default: '10' },
  },
});
const rate = Number(values.rate);
const outageSeconds = Number(values.outage);
const warmupSeconds = Number(values.warmup);
const afterSeconds = Number(values.after);

const unsupported = throwawayPostgresUnsupported();
if (unsupported) {
  console.error(`chaos: ${unsupported}`);
  process.exit(1);
}

const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));
const mebibytes = (kilobytes: number) => `${(kilobytes / 1024).toFixed(0)} MiB`;

async function rssKilobytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

const query = `mutation ChaosSendMessage($input: SendMessageInput!) { sendMessage(input: $input) { cacheReadFailed call { id } } }`;

/** Sends `rate` calls a second until stopped; keeps the ids of the calls answered. */
function startLoad(server: () => ServerProcess) {
  const answered: string[] = [];
  const failures: string[] = [];
  let sent = 0;
  let readFailed = 0;
  const pending = new Set<Promise<void>>();
  const timer = setInterval(() => {
    for (let burst = 0; burst < rate / 20; burst += 1) {
      const number = sent++;
      const content = number % 3 === 0 ? `repeated ${number % 10}` : `chaos ${Date.now()} ${number}`;
      const call = fetch(server().url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables: { input: { messages: [{ role: 'USER', content }], cache: 'USE' } } }),
      })
        .then(async (response) => {
          const body = (await response.json()) as { data?: { sendMessage: { call: { id: string }; cacheReadFailed: boolean } }; errors?: { message: string }[] };
          if (body.data?.sendMessage) {
            answered.push(body.data.sendMessage.call.id);
            if (body.data.sendMessage.cacheReadFailed) readFailed += 1;
          } else failures.push(body.errors?.[0]?.message ?? 'no data');
        })
        .catch((error: unknown) => {
          const cause = (error as { cause?: { code?: string; message?: string } }).cause;
          failures.push(`${error instanceof Error ? error.message : String(error)}${cause ? `: ${cause.code ?? cause.message}` : ''}`);
        })
        .finally(() => pending.delete(call));
      pending.add(call);
    }
  }, 50);
  return {
    answered,
    failures,
    get sent() {
      return sent;
    },
    get readFailed() {
      return readFailed;
    },
    async stop() {
      clearInterval(timer);
      await Promise.all(pending);
    },
  };
}

/** The ids of the calls in a spool's files, synced or not. */
async function spooledCallIds(dir: string): Promise<Set<string>> {
  const ids = new Set<string>();
  const files = await readdir(dir).catch(() => [] as string[]);
  for (const file of files.filter((name) => name.endsWith('.ndjson'))) {
    for (const match of (await readFile(join(dir, file), 'utf8')).matchAll(/"kind":"call","id":"([0-9a-f-]+)"/g)) ids.add(match[1]!);
  }
  return ids;
}

async function main(): Promise<void> {
  const [cluster, fake, workDir] = await Promise.all([startThrowawayPostgres(), startFakeOpenAI(), mkdtemp(join(tmpdir(), 'callboard-chaos-'))]);
  const env = {
    DATABASE_URL: cluster.url,
    OPENAI_API_KEY: 'sk-chaos',
    CALLBOARD_OPENAI__BASE_URL: fake.openaiBaseURL,
    CALLBOARD_OPENAI__CACHE_API_CALLS: 'True',
    CALLBOARD_HISTORY__SPOOL_DIR: join(workDir, 'spool'),
    CALLBOARD_LOGGING__LEVEL: 'info',
  };
  const rowsOf = async (ids: string[]) =>
    withClient(cluster.url, async (client) => {
      const { rows } = await client.query<{ found: string; total: string }>(
        'SELECT count(*) FILTER (WHERE id = ANY($1::uuid[])) AS found, count(*) AS total FROM "LlmCall"',
        [ids],
      );
      return { found: Number(rows[0]!.found), total: Number(rows[0]!.total) };
    });
  const waitForRows = async (ids: string[], seconds: number) => {
    const deadline = Date.now() + seconds * 1000;
    let counts = await rowsOf(ids);
    while (counts.found < ids.length && Date.now() < deadline) {
      await sleep(500);
      counts = await rowsOf(ids);
    }
    return counts;
  };
  const logCounts = (output: string[]) => {
    const levels = output.map((line) => Number(/"level":(\d+)/.exec(line)?.[1] ?? 0));
    return { lines: output.length, warn: levels.filter((level) => level === 40).length, error: levels.filter((level) => level >= 50).length, bytes: output.join('\n').length };
  };

  try {
    // 1. An outage under load.
    let server = await startServerProcess({ cwd: workDir, env });
    const load = startLoad(() => server);
    await sleep(warmupSeconds * 1000);
    const rssBefore = await rssKilobytes(server.child.pid!);
    await cluster.stop();
    const outageStarted = Date.now();
    let rssMax = rssBefore;
    while (Date.now() - outageStarted < outageSeconds * 1000) {
      await sleep(1000);
      rssMax = Math.max(rssMax, await rssKilobytes(server.child.pid!));
    }
    await cluster.start();
    const outageMs = Date.now() - outageStarted;
    await sleep(afterSeconds * 1000);
    await load.stop();
    const recovered = Date.now();
    const outageRows = await waitForRows(load.answered, 120);
    console.log(
      JSON.stringify({
        phase: 'outage',
        rate,
        outageSeconds: outageMs / 1000,
        sent: load.sent,
        answered: load.answered.length,
        failed: load.failures.length,
        firstFailures: [...new Set(load.failures)].slice(0, 3),
        answeredWithCacheReadFailed: load.readFailed,
        rowsWritten: outageRows.found,
        rowsLost: load.answered.length - outageRows.found,
        rowsInTable: outageRows.total,
        secondsToWriteAfterLoad: (Date.now() - recovered) / 1000,
        rssBeforeOutage: mebibytes(rssBefore),
        rssMaxDuringOutage: mebibytes(rssMax),
        log: logCounts(server.output),
      }),
    );

    // 2. kill -9 while the database is up, then while it is down; each time a new server starts on the spool left behind.
    for (const databaseUp of [true, false]) {
      const before = (await rowsOf([])).total;
      const killed = startLoad(() => server);
      await sleep(3000);
      if (!databaseUp) {
        await cluster.stop();
        await sleep(3000);
      }
      server.child.kill('SIGKILL');
      await killed.stop();
      const spooledIds = await spooledCallIds(env.CALLBOARD_HISTORY__SPOOL_DIR);
      const inDatabase = databaseUp ? (await rowsOf(killed.answered)).found : 0;
      if (!databaseUp) await cluster.start();
      server = await startServerProcess({ cwd: workDir, env });
      const counts = await waitForRows(killed.answered, 30);
      console.log(
        JSON.stringify({
          phase: databaseUp ? 'kill -9, database up' : 'kill -9, database down 3 s',
          answered: killed.answered.length,
          failed: killed.failures.length,
          firstFailures: [...new Set(killed.failures)].slice(0, 3),
          rowsWritten: counts.found,
          rowsLost: killed.answered.length - counts.found,
          inSpoolAtKill: killed.answered.filter((id) => spooledIds.has(id)).length,
          inDatabaseAtKill: inDatabase,
          rowsAddedToTable: counts.total - before,
        }),
      );
      if (killed.answered.length === 0) console.log(server.output.slice(-5).join('\n'));
    }
    await server.stop();
  } finally {
    await fake.close();
    await cluster.dispose();
    await rm(workDir, { recursive: true, force: true });
  }
}

await main();
