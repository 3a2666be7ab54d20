import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import OpenAI from 'openai';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DashboardCallsDocument, DashboardStatsDocument } from '../../src/client/generated/graphql.ts';
import { formatCount, formatMoney, formatRate } from '../../src/dashboard/format.ts';
import { dashboardContentSecurityPolicy } from '../../src/http/dashboard.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { defaultChatResponse, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, send, type Listening } from '../support/http.ts';
import { costOfTokens, parseDecimal, priceScale } from '../../src/money.ts';
import { randomGenerator } from '../support/seeded-random.ts';

// Debian's Chromium: .ci/run installs it; on a machine without it the page tests are skipped.
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const root = fileURLToPath(new URL('../..', import.meta.url));
const outputDir = fileURLToPath(new URL('../output/', import.meta.url));
const masterKey = 'cb-dashboard-master-SECRET';

/** The page is served from dist/dashboard/: build it when the sources changed (as `npm test` does first). */
function buildIfStale(): void {
  execFileSync(process.execPath, ['scripts/build.mjs', '--if-stale'], { cwd: root, stdio: 'pipe' });
}

/**
 * History rows of earlier hours, written straight to the database as the history writer would
 * have (the rollup's trigger marks their hours): the charts then have a day to draw. Seeded, so
 * every run draws the same.
 */
function pastCalls(tenant: string, count: number, seed: number) {
  const random = randomGenerator(seed);
  const now = Date.now();
  return Array.from({ length: count }, (_, index) => {
    const model = random() < 0.7 ? 'gpt-4o-mini' : 'gpt-4.1';
    const [input, output] = model === 'gpt-4o-mini' ? ['0.15', '0.6'] : ['2', '8'];
    const hit = random() < 0.2 + (index / count) * 0.5;
    const failed = !hit && random() < 0.08;
    const promptTokens = 200 + Math.floor(random() * 1800);
    const completionTokens = failed ? 0 : 50 + Math.floor(random() * 400);
    return {
      // Spread over the last 20 hours, older first: earlier hours are slower and miss more.
      createdAt: new Date(now - (20 - (index / count) * 19.5) * 3_600_000 - random() * 600_000),
      tenant,
      kind: 'CHAT' as const,
      apiType: 'openai',
      model,
      status: failed ? ('ERROR' as const) : ('SUCCESS' as const),
      cacheStatus: hit ? ('HIT' as const) : ('MISS' as const),
      errorCode: failed ? 'PROVIDER_UNAVAILABLE' : null,
      attemptCount: hit ? 0 : failed ? 3 : 1,
      latencyMs: hit ? 0.3 + random() : 300 + random() * 900 * (1.5 - index / count),
      promptTokens: failed ? null : promptTokens,
      completionTokens: failed ? null : completionTokens,
      totalTokens: failed ? null : promptTokens + completionTokens,
      // As the history writes them: exact decimals; a hit spent 0 and saved what its answer cost.
      ...(() => {
        const cost = failed ? null : costOfTokens({ input: parseDecimal(input, priceScale)!, output: parseDecimal(output, priceScale)! }, promptTokens, completionTokens);
        return hit ? { costUsd: '0', costSavedUsd: cost } : { costUsd: cost, costSavedUsd: null };
      })(),
    };
  });
}

/** Polls until the condition holds; fails after 10 s. */
async function waitUntil(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('the dashboard over HTTP: a static page and immutable, compressed files', () => {
  let testApp: TestApp;
  let server: Listening;

  beforeAll(async () => {
    buildIfStale();
    testApp = await createTestApp('pglite', testConfig('', { CALLBOARD_MASTER_KEY: masterKey }));
    server = await listen(testApp.app);
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await testApp?.dispose();
  });

  it('serves the page without a key, with a strict content policy, and its assets hashed, compressed and cached', async () => {
    const page = await fetch(`${server.url}/dashboard`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(dashboardContentSecurityPolicy);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.headers.get('cache-control')).toBe('no-cache');
    const html = await page.text();
    // No inline script, nothing from another host.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);
    const script = /src="(\/dashboard\/assets\/[\w-]+\/main-[A-Z0-9]+\.js)"/.exec(html)![1]!;
    const styles = /href="(\/dashboard\/assets\/[\w-]+\/main-[A-Z0-9]+\.css)"/.exec(html)![1]!;

    // node:http, to see the bytes as sent (fetch would decode them).
    const brotli = await send(server.port, { path: script, headers: { 'accept-encoding': 'gzip, br' } });
    expect(brotli.status).toBe(200);
    const plain = await fetch(`${server.url}${script}`, { headers: { 'accept-encoding': 'identity' } });
    expect(plain.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(plain.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(plain.headers.get('content-encoding')).toBeNull();
    const source = Buffer.from(await plain.arrayBuffer());
    const raw = (acceptEncoding: string) =>
      new Promise<{ encoding: string | undefined; body: Buffer; etag: string | undefined }>((resolve, reject) => {
        import('node:http').then(({ get }) =>
          get(`${server.url}${script}`, { headers: { 'accept-encoding': acceptEncoding } }, (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (chunk: Buffer) => chunks.push(chunk));
            response.on('end', () => resolve({ encoding: response.headers['content-encoding'], body: Buffer.concat(chunks), etag: response.headers.etag }));
          }).on('error', reject),
        );
      });
    const br = await raw('gzip;q=0.5, br');
    expect(br.encoding).toBe('br');
    expect(brotliDecompressSync(br.body).equals(source)).toBe(true);
    expect(br.body.length).toBeLessThan(source.length / 2);
    const gzip = await raw('gzip, br;q=0');
    expect(gzip.encoding).toBe('gzip');
    expect(gunzipSync(gzip.body).equals(source)).toBe(true);

    // Each encoding has its own ETag: the brotli one revalidates a request that would get brotli.
    const again = await fetch(`${server.url}${script}`, { headers: { 'if-none-match': br.etag!, 'accept-encoding': 'br' } });
    expect(again.status).toBe(304);
    expect((await fetch(`${server.url}${styles}`)).headers.get('content-type')).toBe('text/css; charset=utf-8');
    expect((await fetch(`${server.url}/dashboard/assets/main-NOPE.js`)).status).toBe(404);
    expect((await fetch(`${server.url}/dashboard/assets/..%2F..%2Fpackage.json`)).status).toBe(404);
    expect((await fetch(`${server.url}/dashboard`, { method: 'POST' })).status).toBe(405);
    // The page is revalidated, not re-sent, while the build is the same.
    const pageAgain = await fetch(`${server.url}/dashboard`, { headers: { 'if-none-match': page.headers.get('etag')! } });
    expect(pageAgain.status).toBe(304);
    // The data stays behind the key.
    expect((await fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ me { id } }"}' })).status).toBe(401);
  });
});

describe.skipIf(!existsSync(chromiumPath)).each(databaseKinds)('the dashboard in Chromium on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  let browser: Browser;
  let page: Page;
  const foreignRequests: string[] = [];
  const pageErrors: string[] = [];
  const keys = {} as Record<'teamA' | 'teamB', string>;
  const seededCalls = 60;
  const openai = (apiKey: string) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
  const ask = (apiKey: string, content: string) => openai(apiKey).chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] });
  /** The API's answer for a key, with the same typed operation as the page. */
  const api = async <TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, variables: TVariables, key: string): Promise<TResult> => {
    const answer = await testApp.execute(document, variables, { authorization: `Bearer ${key}` });
    expect(answer.errors).toBeUndefined();
    return answer.data!;
  };
  const text = async (testId: string) => (await page.getByTestId(testId).innerText()).trim();

  beforeAll(async () => {
    buildIfStale();
    mkdirSync(outputDir, { recursive: true });
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\nCACHE_API_CALLS=True\nMAX_ATTEMPTS=3\n[Prices]\ngpt-4o-mini=0.15, 0.60\ngpt-4.1=2.00, 8.00\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-dashboard-upstream', CALLBOARD_MASTER_KEY: masterKey }));
    server = await listen(testApp.app);
    keys.teamA = (await testApp.services.keys.create({ name: 'dashboard A', role: 'MEMBER', tenant: 'team-a' }, 'test')).key;
    keys.teamB = (await testApp.services.keys.create({ name: 'dashboard B', role: 'MEMBER', tenant: 'team-b' }, 'test')).key;
    await testApp.testDatabase.database.prisma.llmCall.createMany({ data: [...pastCalls('team-a', seededCalls, 11), ...pastCalls('team-b', 30, 12)] });

    // Team A: three answers (one after a retried 500), a cache hit, another model, and an error.
    await ask(keys.teamA, 'What is a callboard?');
    await ask(keys.teamA, 'What is a callboard?');
    let failures = 1;
    fake.script('chat', (request) => (failures-- > 0 ? { error: { status: 500, message: 'upstream hiccup' } } : defaultChatResponse(request)));
    await ask(keys.teamA, 'Name three theatres.');
    fake.reset();
    await openai(keys.teamA).chat.completions.create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'Summarise Hamlet.' }] });
    fake.script('chat', { error: { status: 400, message: 'bad request upstream', code: 'invalid_value' } });
    await expect(ask(keys.teamA, 'This one fails.')).rejects.toBeInstanceOf(OpenAI.APIError);
    fake.reset();
    // Team B: a call team A's key must not see.
    await ask(keys.teamB, 'Team B only.');
    await testApp.services.history.flush();

    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    // Offline: the page may reach its own server only; anything else fails the test (and is not sent).
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(`${server.url}/`) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
      foreignRequests.push(url);
      return route.abort();
    });
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => (message.type() === 'error' ? pageErrors.push(message.text()) : undefined));
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
  });

  it('asks for a key, shows the server’s code for a wrong one, then shows what the key may see', { timeout: 120_000 }, async () => {
    await page.goto(`${server.url}/dashboard`);
    await page.getByLabel('API key').waitFor();
    await page.getByLabel('API key').fill('cb_live_not-a-real-key-000000000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => text('sign-in-error')).toBe('UNAUTHENTICATED');
    expect(await page.locator('.sign-in').innerText()).toContain('Unknown, revoked or expired API key.');
    await page.screenshot({ path: `${outputDir}dashboard-sign-in.png` });
    // The browser logs the refused requests (401) of the page without a key and with the wrong one.
    pageErrors.splice(0);

    await page.getByLabel('API key').fill(keys.teamA);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('stat-calls').waitFor();
    expect(await text('who')).toContain('MEMBER of team-a');

    const from = new Date(Date.now() - 24 * 3_600_000).toISOString();
    const stats = await api(DashboardStatsDocument,
      { filter: { from } },
      keys.teamA,
    );
    const totals = stats.totals[0]!;
    // The calls made here (one of them an error, one a hit) and the earlier ones.
    expect(totals.calls).toBe(5 + seededCalls);
    expect(totals.errors).toBeGreaterThanOrEqual(1);
    expect(await text('stat-calls')).toBe(formatCount(totals.calls));
    expect(await text('stat-errors')).toBe(formatCount(totals.errors));
    expect(await text('stat-hit-rate')).toBe(formatRate(totals.hitRate));
    expect(await text('stat-cost')).toBe(formatMoney(totals.costUsd));
    expect(await text('stat-saved')).toBe(formatMoney(totals.costSavedUsd));
    expect(Number(totals.costUsd)).toBeGreaterThan(0);

    // The table holds team A's calls only: the same ids as the API gives that key, none of team B's.
    const calls = await api(DashboardCallsDocument, { first: 25, filter: { from } }, keys.teamA);
    const shown = await page.locator('[data-testid=recent-calls] tbody tr[data-call-id]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-call-id')));
    expect(shown).toEqual(calls.calls.edges.map((edge) => edge.node.id));
    const teamB = await api(DashboardCallsDocument, { first: 100 }, keys.teamB);
    expect(teamB.calls.totalCount).toBe(31);
    const teamBIds = new Set(teamB.calls.edges.map((edge) => edge.node.id));
    expect(shown.filter((id) => teamBIds.has(id!))).toEqual([]);
    expect(await page.locator('[data-testid=recent-calls]').innerText()).not.toContain('team-b');
    // The charts are drawn (uPlot's canvas), and the cost table has a row per model.
    expect(await page.locator('[data-testid=chart-calls] canvas').count()).toBe(1);
    expect(await page.locator('[data-testid=cost-by-model] tbody tr').count()).toBeGreaterThanOrEqual(2);
    // Its totals are the exact sums of its rows: the same amounts as the API's totals, to the last digit.
    expect(await text('cost-total-spent')).toBe(formatMoney(totals.costUsd));
    expect(await text('cost-total-saved')).toBe(formatMoney(totals.costSavedUsd));
    await page.screenshot({ path: `${outputDir}dashboard.png`, fullPage: true });
    expect(foreignRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('shows a new call as it finishes (callEvents) and updates the totals, without a reload', { timeout: 120_000 }, async () => {
    await waitUntil(() => testApp.services.callEvents.size() > 0, 'the page subscribed to callEvents');
    expect(await text('live')).toContain('live');
    const before = Number((await text('stat-calls')).replace(/,/g, ''));
    const navigations: string[] = [];
    page.on('framenavigated', (frame) => navigations.push(frame.url()));
    await ask(keys.teamA, 'A new call, live.');
    await ask(keys.teamB, 'Team B again, never shown to A.');
    await testApp.services.history.flush();
    const newest = await api(DashboardCallsDocument, { first: 1 }, keys.teamA);
    const id = newest.calls.edges[0]!.node.id;
    await page.locator(`tr[data-call-id="${id}"]`).waitFor({ timeout: 10_000 });
    await expect.poll(() => text('stat-calls'), { timeout: 10_000 }).toBe(formatCount(before + 1));
    expect(await page.locator('[data-testid=recent-calls] tbody tr').first().getAttribute('data-call-id')).toBe(id);
    const teamB = await api(DashboardCallsDocument, { first: 1 }, keys.teamB);
    expect(await page.locator(`tr[data-call-id="${teamB.calls.edges[0]!.node.id}"]`).count()).toBe(0);
    expect(navigations).toEqual([]);
    expect(foreignRequests).toEqual([]);
  });

  it('drills down into a call: its attempts and its cache entry', { timeout: 120_000 }, async () => {
    const calls = await api(DashboardCallsDocument,
      { first: 25 },
      keys.teamA,
    );
    const retried = calls.calls.edges.map((edge) => edge.node).find((call) => call.attemptCount === 2)!;
    expect(retried).toBeDefined();
    await page.locator(`tr[data-call-id="${retried.id}"]`).click();
    const detail = page.getByTestId('call-detail');
    await detail.getByTestId('attempt').nth(1).waitFor();
    const attempts = await detail.getByTestId('attempt').evaluateAll((rows) => rows.map((row) => [...row.querySelectorAll('td')].map((cell) => cell.textContent)));
    expect(attempts.map((cells) => [cells[0], cells[2]])).toEqual([
      ['1', '500'],
      ['2', '200'],
    ]);
    expect(await detail.getByTestId('cache-entry').isVisible()).toBe(true);
    expect(await detail.getByTestId('cache-hits').innerText()).toBe('0');
    await page.screenshot({ path: `${outputDir}dashboard-call.png`, fullPage: true });

    // The cache hit: no attempt, and its entry counts the hit.
    const hit = calls.calls.edges.map((edge) => edge.node).find((call) => call.cacheStatus === 'HIT')!;
    await page.locator(`tr[data-call-id="${hit.id}"]`).click();
    await expect.poll(() => detail.innerText()).toContain('None: answered without calling the provider.');
    expect(await detail.getByTestId('cache-hits').innerText()).toBe('1');
    // The error: its code.
    const failed = calls.calls.edges.map((edge) => edge.node).find((call) => call.status === 'ERROR')!;
    await page.locator(`tr[data-call-id="${failed.id}"]`).click();
    await expect.poll(() => text('detail-status')).toMatch(/^ERROR · [A-Z_]+$/);
    expect(foreignRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});

describe.skipIf(!existsSync(chromiumPath))('the dashboard in open mode (no master key)', () => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  let browser: Browser;

  beforeAll(async () => {
    buildIfStale();
    fake = await startFakeOpenAI();
    testApp = await createTestApp('pglite', testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n`, { OPENAI_API_KEY: 'sk-dashboard-open' }));
    server = await listen(testApp.app);
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
    });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
  });

  it('opens without a key on a loopback name, and a rebound name gets 403', { timeout: 120_000 }, async () => {
    await new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'open' }] });
    await testApp.services.history.flush();
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (message) => (message.type() === 'error' ? errors.push(message.text()) : undefined));
    await page.goto(`${server.url}/dashboard`);
    await expect.poll(() => page.getByTestId('stat-calls').innerText().catch(() => ''), { timeout: 20_000 }).toBe('1');
    expect(await page.getByTestId('who').innerText()).toContain('open mode');
    expect(await page.getByRole('button', { name: 'Sign out' }).count()).toBe(0);
    expect(errors).toEqual([]);
    // The Host check of open mode covers the page too (DNS rebinding).
    expect((await send(server.port, { path: '/dashboard', headers: { host: `rebound.test:${server.port}` } })).status).toBe(403);
    expect((await send(server.port, { path: '/dashboard', headers: { host: `localhost:${server.port}` } })).status).toBe(200);
  });
});
