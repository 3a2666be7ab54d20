import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createDatabase } from '../../src/db/database.ts';
import { readMigrations } from '../../src/db/migrate.ts';
import { createEmptyDatabase, migrationsDir, type TestDatabase } from '../support/database.ts';

/** Every migration's name, as the start-up log lists what it applied. */
const migrationNames = async () => JSON.stringify((await readMigrations(migrationsDir)).map((migration) => migration.name));
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
import { startFakeOpenAI } from '../support/fake-openai.ts';
import { startServerProcess } from '../support/server-process.ts';

const tokenCountBody = JSON.stringify({ query: '{ tokenCount(model: "gpt-4o", text: "tiktoken is great!") { tokens encoding } }' });

async function postGraphQL(url: string, body: string) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  return { status: response.status, body: await response.json() };
}

/** The history rows of a stopped server's embedded database, with their attempts. */
async function storedCalls(dataDir: string) {
  const database = await createDatabase({ url: null, dataDir });
  try {
    return await database.prisma.llmCall.findMany({ include: { attempts: { orderBy: { number: 'asc' } } } });
  } finally {
    await database.close();
  }
}

const untilLogged = async (output: string[], text: string) => {
  while (!output.some((line) => line.includes(text))) await new Promise((resolve) => setTimeout(resolve, 20));
};

const hangingCall = JSON.stringify({ query: 'mutation { sendMessage(input: { messages: [{ role: USER, content: "are you there?" }] }) { call { id } } }' });

const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));

describe('the server process (npm start)', () => {
  let workDir: string;
  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'callboard-server-'));
  });
  afterAll(() => rm(workDir, { recursive: true, force: true }));

  it('starts on an embedded database in a data folder, answers on 127.0.0.1, stops on SIGTERM with 0, and keeps its data', async () => {
    const env = { CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'data') };
    const first = await startServerProcess({ cwd: workDir, env });
    expect(first.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/graphql$/);
    expect(first.output.join('\n')).toContain(`"database":"pglite","location":"${join(workDir, 'data')}","applied":${await migrationNames()}`);
    const answer = await postGraphQL(first.url, tokenCountBody);
    expect(answer.body).toEqual({ data: { tokenCount: { tokens: 6, encoding: 'o200k_base' } } });
    const graphiql = await fetch(first.url, { headers: { accept: 'text/html' } });
    expect(await graphiql.text()).toContain('<title>Callboard</title>');
    expect(await first.stop('SIGTERM')).toBe(0);
    expect(first.output.join('\n')).toContain('"msg":"stopped"');

    const second = await startServerProcess({ cwd: workDir, env });
    expect(second.output.join('\n')).toMatch(/"database":"pglite".*"applied":\[\]/);
    expect(await second.stop('SIGINT')).toBe(0);
  });

  it('on SIGTERM finishes the call in flight, writes its history, and the next start still has it', async () => {
    const fake = await startFakeOpenAI();
    fake.script('chat', { json: { id: 'x', object: 'chat.completion', created: 0, model: 'gpt-4o-mini', choices: [{ index: 0, message: { role: 'assistant', content: 'late answer', refusal: null }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }, delayMs: 1500 });
    const env = { CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'data-inflight'), CALLBOARD_OPENAI__BASE_URL: fake.openaiBaseURL, OPENAI_API_KEY: 'sk-process-test' };
    try {
      const server = await startServerProcess({ cwd: workDir, env });
      const inFlight = postGraphQL(server.url, JSON.stringify({ query: 'mutation { sendMessage(input: { messages: [{ role: USER, content: "hello" }], tags: ["in-flight"] }) { message { content } call { id } } }' }));
      while (fake.requestsTo('chat').length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      const exitCode = server.stop('SIGTERM');
      const answer = await inFlight;
      expect(answer.body.data.sendMessage.message.content).toBe('late answer');
      expect(await exitCode).toBe(0);

      const restarted = await startServerProcess({ cwd: workDir, env });
      const history = await postGraphQL(restarted.url, JSON.stringify({ query: '{ calls(filter: { tags: ["in-flight"] }) { totalCount edges { node { id status } } } }' }));
      expect(history.body.data.calls).toEqual({ totalCount: 1, edges: [{ node: { id: answer.body.data.sendMessage.call.id, status: 'SUCCESS' } }] });
      expect(await restarted.stop()).toBe(0);
    } finally {
      await fake.close();
    }
  });

  it('on SIGTERM lets a call run past 10 s until its deadline, answers DEADLINE_EXCEEDED, and keeps its real attempt', async () => {
    const fake = await startFakeOpenAI();
    fake.script('chat', { hang: true });
    const dataDir = join(workDir, 'data-deadline');
    const env = { CALLBOARD_DATABASE__DATA_DIR: dataDir, CALLBOARD_OPENAI__BASE_URL: fake.openaiBaseURL, OPENAI_API_KEY: 'sk-process-test', CALLBOARD_OPENAI__CALL_DEADLINE: '11' };
    try {
      const server = await startServerProcess({ cwd: workDir, env });
      const inFlight = postGraphQL(server.url, hangingCall);
      while (fake.requestsTo('chat').length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      const exitCode = server.stop('SIGTERM');
      const answer = await inFlight;
      expect(answer.body.errors[0].extensions).toMatchObject({ code: 'DEADLINE_EXCEEDED', details: { deadlineSeconds: 11, attempts: 1, lastErrorCode: 'PROVIDER_TIMEOUT' } });
      expect(await exitCode).toBe(0);
      expect(server.output.join('\n')).toContain('"graceSeconds":16');

      const [row] = await storedCalls(dataDir);
      expect(row).toMatchObject({ id: answer.body.errors[0].extensions.details.callId, status: 'ERROR', errorCode: 'DEADLINE_EXCEEDED', attemptCount: 1 });
      expect(row!.attempts).toMatchObject([{ number: 1, errorCode: 'PROVIDER_TIMEOUT', httpStatus: null }]);
      // Longer than the 10 s after which the server used to cut every connection.
      expect(row!.attempts[0]!.latencyMs).toBeGreaterThan(10_000);
      expect(fake.requestsTo('chat')).toHaveLength(1);
    } finally {
      await fake.close();
    }
  }, 90_000);

  it('stops at once on a second signal: calls in flight, shared ones too, answer ABORTED and are recorded with their cut attempt', async () => {
    const fake = await startFakeOpenAI();
    fake.script('chat', { hang: true });
    const dataDir = join(workDir, 'data-forced');
    const env = { CALLBOARD_DATABASE__DATA_DIR: dataDir, CALLBOARD_OPENAI__BASE_URL: fake.openaiBaseURL, OPENAI_API_KEY: 'sk-process-test' };
    try {
      const server = await startServerProcess({ cwd: workDir, env });
      const inFlight = postGraphQL(server.url, hangingCall);
      // The cache's single flight: the upstream request goes on even when its caller leaves, for the others.
      const shared = postGraphQL(server.url, JSON.stringify({ query: 'mutation { sendMessage(input: { messages: [{ role: USER, content: "shared" }], cache: USE }) { call { id } } }' }));
      while (fake.requestsTo('chat').length < 2) await new Promise((resolve) => setTimeout(resolve, 20));
      const exitCode = server.stop('SIGTERM');
      await untilLogged(server.output, '"graceSeconds":305');
      const forcedAt = performance.now();
      server.child.kill('SIGINT');
      expect(await exitCode).toBe(0);
      expect(performance.now() - forcedAt).toBeLessThan(5_000);
      const answer = await inFlight;
      expect(answer.body.errors[0]).toMatchObject({ message: 'The call was cut: the server had to stop.', extensions: { code: 'ABORTED' } });
      expect(server.output.join('\n')).toContain('"reason":"second SIGINT"');

      const sharedAnswer = await shared;
      expect(sharedAnswer.body.errors[0].extensions.code).toBe('ABORTED');

      const rows = await storedCalls(dataDir);
      expect(rows.map((row) => row.id).sort()).toEqual([answer.body.errors[0].extensions.details.callId, sharedAnswer.body.errors[0].extensions.details.callId].sort());
      for (const row of rows) {
        expect(row).toMatchObject({ status: 'ERROR', errorCode: 'ABORTED', attemptCount: 1 });
        expect(row.attempts).toMatchObject([{ number: 1, errorCode: 'ABORTED' }]);
      }
    } finally {
      await fake.close();
    }
  }, 90_000);

  it('stops with nothing left behind when SIGTERM is sent to `npm start` itself', async () => {
    // The compiled server (dist/, built by `npm test`'s pretest or `npm install`'s prepare), as in production.
    const npm = spawn('npm', ['start'], {
      cwd: repositoryRoot,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? workDir, PORT: '0', CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'data-npm') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    const exited = new Promise<number | null>((resolve) => npm.on('exit', (code) => resolve(code)));
    for (const stream of [npm.stdout, npm.stderr]) stream.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
    await untilLogged(output, 'Callboard is listening');
    const port = Number(/"url":"http:\/\/127\.0\.0\.1:(\d+)\/graphql"/.exec(output.join(''))![1]);
    const descendants = (pid: number): number[] => {
      const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
      return children.flatMap((child) => [child, ...descendants(child)]);
    };
    const processes = descendants(npm.pid!);
    expect(processes.length).toBeGreaterThan(0);

    const stoppedAt = performance.now();
    npm.kill('SIGTERM');
    await exited;
    const isAlive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    // Before, npm's shell took the signal and the server went on as an orphan, for good.
    await expect.poll(() => processes.filter(isAlive), { timeout: 10_000 }).toEqual([]);
    expect(performance.now() - stoppedAt).toBeLessThan(10_000);
    const refused = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.on('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.on('error', () => resolve(true));
    });
    expect(refused).toBe(true);
    expect(output.join('')).toContain('"msg":"stopped"');
  }, 60_000);

  it('compiled, as `npm start` runs it: answers /ready, then serves GraphiQL with its packaged scripts, loaded on the first requests for the page, and Prisma with its compiler', async () => {
    // GraphiQL's renderer is imported on its first use, from dist/ as from the sources: built here if stale, as `npm start` does.
    const build = spawnSync(process.execPath, [join(repositoryRoot, 'scripts/build.mjs'), '--if-stale'], { cwd: repositoryRoot, encoding: 'utf8' });
    expect(build.status, build.stderr).toBe(0);
    const server = await startServerProcess({ cwd: workDir, env: { CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'data-compiled') }, compiled: true });
    try {
      const origin = new URL(server.url).origin;
      expect((await fetch(`${origin}/ready`)).status).toBe(200);
      // Three at once: none may get a page before the renderer has loaded, nor an error while it loads.
      const pages = await Promise.all([0, 1, 2].map(() => fetch(server.url, { headers: { accept: 'text/html' } })));
      for (const page of pages) {
        expect(page.status).toBe(200);
        expect(page.headers.get('content-type')).toContain('text/html');
        const html = await page.text();
        expect(html).toContain('<title>Callboard</title>');
        expect(html).toContain('query CountTokens');
        // The packaged page carries GraphiQL's scripts (megabytes); Yoga's default loads them from unpkg.com.
        expect(html).not.toContain('unpkg.com');
        expect(html.length).toBeGreaterThan(1_000_000);
      }
      const answer = await postGraphQL(server.url, tokenCountBody);
      expect(answer.body).toEqual({ data: { tokenCount: { tokens: 6, encoding: 'o200k_base' } } });
      // Prisma's query compiler is a chunk of its own too, read on Prisma's first query.
      const forced = await postGraphQL(server.url, JSON.stringify({ query: 'mutation { forceApiCache(enabled: true) { key value } }' }));
      expect(forced.body).toEqual({ data: { forceApiCache: [{ key: 'CACHE_API_CALLS', value: 'True' }] } });
    } finally {
      expect(await server.stop('SIGTERM')).toBe(0);
    }
  }, 120_000);

  it('reads ./config.ini of the working directory over the project one, and the environment over both', async () => {
    await writeFile(join(workDir, 'config.ini'), '[OpenAI]\nMODEL=gpt-4\n[Logging]\nLEVEL=warn\n');
    const server = await startServerProcess({ cwd: workDir, env: { CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'data'), CALLBOARD_LOGGING__LEVEL: 'info' } });
    try {
      const answer = await postGraphQL(server.url, JSON.stringify({ query: '{ tokenCount(text: "x") { model } settings { key source origin } }' }));
      expect(answer.body.data.tokenCount.model).toBe('gpt-4');
      const level = answer.body.data.settings.find((setting: { key: string }) => setting.key === 'LEVEL');
      expect(level).toEqual({ key: 'LEVEL', source: 'ENVIRONMENT', origin: 'CALLBOARD_LOGGING__LEVEL' });
    } finally {
      await server.stop();
      await rm(join(workDir, 'config.ini'));
    }
  });

  it('refuses to start on an invalid configuration and lists every problem', async () => {
    const badFile = join(workDir, 'bad.ini');
    await writeFile(badFile, '[OpenAI]\nTEMPERATURE=warm\nMAX_ATTEMPTS=0\nAPI_TYPE=bedrock\n');
    const failure = await startServerProcess({ cwd: workDir, env: { CALLBOARD_CONFIG: badFile, CALLBOARD_SERVER__PORT: 'eighty' } }).then(
      () => {
        throw new Error('the server started');
      },
      (error: { code: number; output: string[] }) => error,
    );
    expect(failure.code).toBe(1);
    const output = failure.output.join('\n');
    expect(output).toContain('Invalid configuration (4 problems)');
    expect(output).toContain(`${badFile}: [OpenAI] API_TYPE: unknown API type "bedrock"; registered: openai, azure, openai-compatible`);
    expect(output).toContain(`${badFile}: [OpenAI] TEMPERATURE: expected a number, got "warm"`);
    expect(output).toContain(`${badFile}: [OpenAI] MAX_ATTEMPTS`);
    expect(output).toContain('CALLBOARD_SERVER__PORT: [Server] PORT');
  });

  it('refuses to listen beyond loopback without a master key, and says what to set', async () => {
    const failure = await startServerProcess({ cwd: workDir, env: { CALLBOARD_SERVER__HOST: '0.0.0.0', CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'never') } }).then(
      () => {
        throw new Error('the server started');
      },
      (error: { code: number; output: string[] }) => error,
    );
    expect(failure.code).toBe(1);
    expect(failure.output.join('\n')).toContain('Set CALLBOARD_MASTER_KEY');
  });

  it('npm run keys creates a key it prints once, lists it without the secret, and revokes it', async () => {
    const dataDir = join(workDir, 'keys-data');
    const run = (...args: string[]) => {
      const result = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/keys.ts', ...args], {
        cwd: repositoryRoot,
        env: { PATH: process.env.PATH ?? '', CALLBOARD_DATABASE__DATA_DIR: dataDir },
        encoding: 'utf8',
        timeout: 60_000,
      });
      return { code: result.status, output: `${result.stdout}${result.stderr}` };
    };
    const created = run('create', '--name', 'ops', '--role', 'ADMIN', '--tenant', 'default');
    expect(created.code, created.output).toBe(0);
    const key = /^(cb_\S+)$/m.exec(created.output)![1]!;
    const id = /\(id ([0-9a-f-]{36})\)/.exec(created.output)![1]!;
    const listed = run('list');
    expect(listed.code, listed.output).toBe(0);
    expect(listed.output).toContain(id);
    expect(listed.output).toContain(key.slice(0, 10));
    expect(listed.output).not.toContain(key);
    const revoked = run('revoke', id);
    expect(revoked.code, revoked.output).toBe(0);
    expect(revoked.output).toContain(`Revoked key "ops" (${id})`);
    expect(run('create', '--name', 'x', '--role', 'OWNER', '--tenant', 'default').code).toBe(2);
  }, 120_000);
});

describe.runIf(process.env.TEST_DATABASE_URL)('the server process with DATABASE_URL', () => {
  let testDatabase: TestDatabase;
  beforeAll(async () => {
    testDatabase = await createEmptyDatabase('postgres');
  });
  afterAll(() => testDatabase.dispose());

  it('uses that Postgres, migrated on start, and never logs its password', async () => {
    const url = new URL(testDatabase.url!);
    url.password = 'not-needed-with-trust-auth';
    const server = await startServerProcess({ cwd: tmpdir(), env: { DATABASE_URL: url.toString() } });
    const answer = await postGraphQL(server.url, tokenCountBody);
    expect(answer.status).toBe(200);
    expect(await server.stop()).toBe(0);
    const output = server.output.join('\n');
    expect(output).toMatch(new RegExp(`"database":"postgres".*"applied":${escapeRegExp(await migrationNames())}`));
    expect(output).not.toContain('not-needed-with-trust-auth');
    expect(await testDatabase.database.prisma.llmCall.count()).toBe(0);
  });

  it('exits with 1 when history rows could not be written before it stopped, and says how many', async () => {
    const fake = await startFakeOpenAI();
    fake.script('chat', { json: { id: 'x', object: 'chat.completion', created: 0, model: 'gpt-4o-mini', choices: [{ index: 0, message: { role: 'assistant', content: 'kept?', refusal: null }, finish_reason: 'stop' }] } });
    // Neither the database nor the spool can keep the row: the spool's folder would sit under a plain file.
    const notAFolder = join(await mkdtemp(join(tmpdir(), 'callboard-nospool-')), 'file');
    await writeFile(notAFolder, 'not a folder');
    const server = await startServerProcess({
      cwd: tmpdir(),
      env: { DATABASE_URL: testDatabase.url!, CALLBOARD_OPENAI__BASE_URL: fake.openaiBaseURL, OPENAI_API_KEY: 'sk-process-test', CALLBOARD_HISTORY__SPOOL_DIR: join(notAFolder, 'spool') },
    });
    try {
      // The history's table goes away under the running server: every write of its row fails.
      await testDatabase.database.query('ALTER TABLE "LlmCall" RENAME TO "LlmCallAway"');
      const answer = await postGraphQL(server.url, JSON.stringify({ query: 'mutation { sendMessage(input: { messages: [{ role: USER, content: "hello" }] }) { message { content } } }' }));
      expect(answer.body.data.sendMessage.message.content).toBe('kept?');
      expect(await server.stop('SIGTERM')).toBe(1);
      expect(server.output.join('\n')).toMatch(/"lost":1,.*"msg":"history rows could not be written before shutdown"/);
      expect(server.output.join('\n')).toContain('"historyKept":false');
    } finally {
      await testDatabase.database.query('ALTER TABLE "LlmCallAway" RENAME TO "LlmCall"');
      await fake.close();
    }
  }, 90_000);
});
