import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallboardClientError, CallEventsDocument, createCallboardClient, RecentCallsDocument } from '../../src/client/index.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, type Listening } from '../support/http.ts';

const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
const require = createRequire(import.meta.url);
const masterKey = 'cb-client-package-master-SECRET';
const execFileAsync = promisify(execFile);

/** Polls until the condition holds (the server notices a client that went away asynchronously); fails after 5 s. */
async function waitUntil(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// What a dashboard in another project sees: `npm install <this repository>` gives it
// node_modules/callboard, and Node.js resolves `callboard/client` through package.json's "exports".
describe('callboard/client, imported by another project', () => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  let project: string;
  let url: string;

  beforeAll(async () => {
    // dist/client/ as `npm install` (prepare) and `npm test` (pretest) build it.
    const build = spawnSync(process.execPath, [join(repositoryRoot, 'scripts/build.mjs'), '--if-stale'], { cwd: repositoryRoot, encoding: 'utf8' });
    expect(build.status, build.stderr).toBe(0);
    fake = await startFakeOpenAI();
    testApp = await createTestApp(
      'pglite',
      testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nCACHE_API_CALLS=True\n[Prices]\ngpt-4o-mini=0.15, 0.60\n`, { OPENAI_API_KEY: 'sk-client-package', CALLBOARD_MASTER_KEY: masterKey }),
    );
    const ask = () => testApp.services.llm.sendMessage({ messages: [{ role: 'user', content: 'from another project' }], tags: ['outside'] });
    await ask();
    await ask();
    await testApp.services.history.flush();
    server = await listen(testApp.app);
    url = `${server.url}/graphql`;

    project = mkdtempSync(join(tmpdir(), 'callboard-dashboard-'));
    mkdirSync(join(project, 'node_modules', '@urql'), { recursive: true });
    symlinkSync(repositoryRoot, join(project, 'node_modules', 'callboard'), 'dir');
    symlinkSync(realpathSync(dirname(require.resolve('@urql/core/package.json'))), join(project, 'node_modules', '@urql', 'core'), 'dir');
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'a-dashboard', private: true, type: 'module' }));
  });

  afterAll(async () => {
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('runs a query with the small client and one with urql, typed documents from the package', async () => {
    writeFileSync(
      join(project, 'dashboard.mjs'),
      `import { CallboardClientError, CallDetailDocument, createCallboardClient, RecentCallsDocument } from 'callboard/client';
import { Client, fetchExchange } from '@urql/core';

const [url, apiKey] = process.argv.slice(2);
const variables = { first: 5, filter: { tags: ['outside'] } };
const client = createCallboardClient({ url, apiKey });
const recent = await client.request(RecentCallsDocument, variables);
const detail = await client.request(CallDetailDocument, { id: recent.calls.edges[1].node.id });
let refused;
try {
  await createCallboardClient({ url, apiKey: 'cb_not_a_key' }).request(RecentCallsDocument);
} catch (error) {
  refused = { isClientError: error instanceof CallboardClientError, code: error.code, status: error.status };
}
const urql = new Client({ url, exchanges: [fetchExchange], fetchOptions: { headers: { authorization: 'Bearer ' + apiKey } } });
const viaUrql = await urql.query(RecentCallsDocument, variables).toPromise();
console.log(JSON.stringify({ resolved: import.meta.resolve('callboard/client'), recent, detail, refused, urql: { data: viaUrql.data, error: viaUrql.error?.message ?? null } }));
`,
    );
    // Only Node.js's own resolution: no vitest alias, no tsx, the working directory outside the repository.
    // Not spawnSync: the server answering the script runs in this process.
    const run = await execFileAsync(process.execPath, ['dashboard.mjs', url, masterKey], { cwd: project, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
    const out = JSON.parse(run.stdout);
    expect(out.resolved).toBe(pathToFileURL(join(realpathSync(repositoryRoot), 'dist', 'client', 'index.js')).href);

    const expected = await testApp.execute(RecentCallsDocument, { first: 5, filter: { tags: ['outside'] } }, { authorization: `Bearer ${masterKey}` });
    expect(expected.errors).toBeUndefined();
    expect(out.recent).toEqual(expected.data);
    expect(out.recent.calls.edges.map((edge: { node: { cacheStatus: string } }) => edge.node.cacheStatus)).toEqual(['HIT', 'MISS']);
    expect(out.detail.call.attempts.map((attempt: { httpStatus: number }) => attempt.httpStatus)).toEqual([200]);
    expect(out.detail.call.cacheEntry.hitCount).toBe(1);
    expect(out.refused).toEqual({ isClientError: true, code: 'UNAUTHENTICATED', status: 401 });

    expect(out.urql.error).toBeNull();
    // urql adds __typename to what it asks for (its caches key on it); the fields asked for are the same.
    const withoutTypename = (value: unknown): unknown =>
      Array.isArray(value)
        ? value.map(withoutTypename)
        : value && typeof value === 'object'
          ? Object.fromEntries(Object.entries(value).filter(([key]) => key !== '__typename').map(([key, inner]) => [key, withoutTypename(inner)]))
          : value;
    expect(withoutTypename(out.urql.data)).toEqual(expected.data);
  });

  it('gives TypeScript the result types: a field the operation does not select is a compile error', () => {
    const source = (field: string) => `import { CallDetailDocument, CallEventsDocument, createCallboardClient, RecentCallsDocument, type CallStatus, type DateTime, type RecentCallsQuery, type Scalars } from 'callboard/client';

const client = createCallboardClient({ url: 'http://127.0.0.1:4000/graphql', apiKey: 'cb_example' });

export async function latest(): Promise<{ model: string; createdAt: DateTime; status: CallStatus } | undefined> {
  const data: RecentCallsQuery = await client.request(RecentCallsDocument, { first: 1 });
  const node = data.calls.edges[0]?.node;
  return node && { model: node.${field}, createdAt: node.createdAt, status: node.status };
}

export async function attemptNumbers(id: string): Promise<number[]> {
  const data = await client.request(CallDetailDocument, { id });
  return data.call?.attempts.map((attempt) => attempt.number) ?? [];
}

export async function errorCodes(signal: AbortSignal): Promise<(string | null)[]> {
  const codes: (string | null)[] = [];
  for await (const event of client.subscribe(CallEventsDocument, { filter: { statuses: ['ERROR'] } }, { signal })) codes.push(event.callEvents.call.errorCode);
  return codes;
}

export const body: Scalars['JSON'] = { any: 'json' };
`;
    const compile = (name: string, field: string) => {
      writeFileSync(join(project, `${name}.ts`), source(field));
      writeFileSync(
        join(project, `tsconfig.${name}.json`),
        JSON.stringify({
          compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2023', 'DOM'], types: [], strict: true, noEmit: true, skipLibCheck: false },
          files: [`${name}.ts`],
        }),
      );
      // The repository's TypeScript, as `npx tsc` runs it.
      const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
      const result = spawnSync(process.execPath, [tsc, '-p', `tsconfig.${name}.json`], { cwd: project, encoding: 'utf8' });
      return { status: result.status, errors: `${result.stdout}${result.stderr}`.split('\n').filter((line) => /error TS\d+/.test(line)) };
    };
    const right = compile('right', 'model');
    expect(right.errors).toEqual([]);
    expect(right.status).toBe(0);
    const wrong = compile('wrong', 'modelName');
    expect(wrong.errors).toHaveLength(1);
    expect(wrong.errors[0]).toMatch(/^wrong\.ts\(8,\d+\): error TS2339: Property 'modelName' does not exist/);
    expect(wrong.status).not.toBe(0);
  });

  describe('subscribe: callEvents over SSE', () => {
    it('yields each call as it is recorded, and leaving the loop closes the subscription', async () => {
      const client = createCallboardClient({ url, apiKey: masterKey });
      const events = client.subscribe(CallEventsDocument, { filter: { tags: ['live-client'] } });
      const first = events.next();
      await waitUntil(() => testApp.services.callEvents.size() === 1);
      const made = await testApp.services.llm.sendMessage({ messages: [{ role: 'user', content: 'live' }], tags: ['live-client'], cache: 'BYPASS' });
      await testApp.services.history.flush();
      const result = await first;
      expect(result.done).toBe(false);
      expect(result.value).toMatchObject({ callEvents: { missed: 0, call: { id: made.call.id, status: 'SUCCESS', tags: ['live-client'] } } });
      expect(await events.return!()).toEqual({ done: true, value: undefined });
      await waitUntil(() => testApp.services.callEvents.size() === 0);
    });

    it('an aborted signal ends a waiting iteration with its reason and closes the connection', async () => {
      const client = createCallboardClient({ url, apiKey: masterKey });
      const abort = new AbortController();
      const events = client.subscribe(CallEventsDocument, { filter: { tags: ['never'] } }, { signal: abort.signal });
      const waiting = events.next();
      await waitUntil(() => testApp.services.callEvents.size() === 1);
      abort.abort(new Error('the dashboard closed'));
      await expect(waiting).rejects.toThrow('the dashboard closed');
      await waitUntil(() => testApp.services.callEvents.size() === 0);
    });

    it('a refused subscription rejects with the code: no key (HTTP 401), a filter too large, an event past maxEventLength', async () => {
      const noKey = createCallboardClient({ url, apiKey: 'cb_not_a_key' }).subscribe(CallEventsDocument, {});
      await expect(noKey.next()).rejects.toMatchObject({ name: 'CallboardClientError', code: 'UNAUTHENTICATED', status: 401 });

      const client = createCallboardClient({ url, apiKey: masterKey });
      const huge = client.subscribe(CallEventsDocument, { filter: { text: 'x'.repeat(5000) } });
      const refusal = await huge.next().catch((error: unknown) => error);
      expect(refusal).toBeInstanceOf(CallboardClientError);
      expect(refusal).toMatchObject({ code: 'BAD_USER_INPUT', errors: [{ extensions: { details: { field: 'filter', max: 4096 } } }] });

      const small = createCallboardClient({ url, apiKey: masterKey, maxEventLength: 100 }).subscribe(CallEventsDocument, { filter: { tags: ['too-large'] } });
      const next = small.next();
      await waitUntil(() => testApp.services.callEvents.size() === 1);
      await testApp.services.llm.sendMessage({ messages: [{ role: 'user', content: 'large' }], tags: ['too-large'], cache: 'BYPASS' });
      await testApp.services.history.flush();
      await expect(next).rejects.toMatchObject({ code: 'EVENT_TOO_LARGE' });
      await waitUntil(() => testApp.services.callEvents.size() === 0);
    });

    it('request rejects with the GraphQL error code', async () => {
      const client = createCallboardClient({ url, apiKey: masterKey });
      await expect(client.request(RecentCallsDocument, { first: -1 })).rejects.toMatchObject({ name: 'CallboardClientError', code: 'BAD_USER_INPUT' });
    });
  });
});
