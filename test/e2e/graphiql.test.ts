import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../support/app.ts';

// Debian's Chromium: .ci/run installs it; on a machine without it this page test is skipped.
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

describe.skipIf(!existsSync(chromiumPath))('GraphiQL in a real browser', () => {
  let testApp: TestApp;
  let server: Server;
  let browser: Browser;
  let origin: string;
  /** What the server answered, request by request. */
  const served: { path: string; status: number }[] = [];

  beforeAll(async () => {
    testApp = await createTestApp('pglite');
    server = createServer((request, response) => {
      response.on('finish', () => served.push({ path: request.url ?? '', status: response.statusCode }));
      testApp.app(request, response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await chromium.launch({
      executablePath: chromiumPath,
      // Offline: every host but this machine's goes to a proxy that is not there (Chromium sends loopback
      // addresses around a proxy; Playwright's own `proxy` option would not).
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync', '--proxy-server=http://127.0.0.1:9'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await new Promise((resolve) => server?.close(resolve));
    await testApp?.dispose();
  });

  it('opens with the example operations, served without any other host, and runs one', { timeout: 90_000 }, async () => {
    const page = await browser.newPage();
    const foreignRequests: string[] = [];
    page.on('request', (request) => {
      if (!request.url().startsWith(origin) && !request.url().startsWith('blob:') && !request.url().startsWith('data:')) foreignRequests.push(request.url());
    });
    // The editor (Monaco) writes spaces as no-break spaces.
    const pageText = async () => (await page.locator('body').innerText()).replace(/\u00a0/g, ' ');
    await page.goto(`${origin}/graphql`);
    await expect.poll(() => pageText(), { timeout: 20_000 }).toContain('query CountTokens');
    expect(await page.title()).toBe('Callboard');

    const query = '{ tokenCount(model: "gpt-4", text: "tiktoken is great!") { tokens encoding } }';
    await page.goto(`${origin}/graphql?query=${encodeURIComponent(query)}`);
    await expect.poll(() => pageText(), { timeout: 20_000 }).toContain('tokenCount(model: "gpt-4"');
    await page.locator('.graphiql-execute-button').click();
    const responseText = async () => (await page.locator('.graphiql-response').innerText()).replace(/\u00a0/g, ' ');
    await expect.poll(responseText, { timeout: 20_000 }).toContain('"encoding": "cl100k_base"');
    expect(await responseText()).toContain('"tokens": 6');
    await page.screenshot({ path: process.env.GRAPHIQL_SCREENSHOT ?? '/tmp/callboard-graphiql.png' });
    expect(foreignRequests).toEqual([]);
  });

  it("sends a small page, and GraphiQL's files once: compressed, then from the cache or 304", { timeout: 90_000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error' || /worker/i.test(message.text())) problems.push(message.text());
    });
    const pageText = async () => (await page.locator('body').innerText()).replace(/\u00a0/g, ' ');
    const scripts: { encoding: string | undefined; bytes: number }[] = [];
    page.on('response', async (response) => {
      if (response.url().endsWith('/graphiql.js')) scripts.push({ encoding: response.headers()['content-encoding'], bytes: (await response.request().sizes()).responseBodySize });
    });
    served.length = 0;
    const first = await page.goto(`${origin}/graphql`);
    // The page refers to the files by URL: kilobytes, not GraphiQL's 9 MB.
    expect((await first!.body()).length).toBeLessThan(20_000);
    await expect.poll(() => pageText(), { timeout: 20_000 }).toContain('query CountTokens');
    const assets = served.filter((entry) => entry.path.startsWith('/graphiql-assets/'));
    // 5.3 MB of script: 1.3 MB with brotli, 1.4 MB with gzip (Chromium asks for brotli over HTTPS only).
    await expect.poll(() => scripts.length).toBe(1);
    expect(scripts[0]!.encoding).toMatch(/^(br|gzip)$/);
    expect(scripts[0]!.bytes).toBeGreaterThan(1_000_000);
    expect(scripts[0]!.bytes).toBeLessThan(2_000_000);
    expect(assets.map((entry) => entry.path.split('/').pop()).sort()).toEqual(expect.arrayContaining(['favicon.ico', 'graphiql.css', 'graphiql.js', 'start.js']));
    for (const entry of assets) expect(entry.status, entry.path).toBe(200);
    // Monaco's workers came from Callboard too (blob: URLs before).
    expect(assets.some((entry) => entry.path.endsWith('.worker.js'))).toBe(true);

    served.length = 0;
    await page.goto(`${origin}/graphql`);
    // GraphiQL again (it restores its tabs from the last visit, whichever is open).
    await page.locator('.graphiql-execute-button').waitFor({ timeout: 20_000 });
    await expect.poll(() => pageText(), { timeout: 20_000 }).toContain('CountTokens');
    // The second load takes the files from the browser's cache (immutable), or at worst revalidates them.
    // (Monaco may start a worker late, after the first load was counted: only files counted there are compared.)
    const firstLoad = new Set(assets.map((entry) => entry.path));
    const again = served.filter((entry) => firstLoad.has(entry.path));
    for (const entry of again) expect(entry.status, entry.path).toBe(304);
    expect(problems).toEqual([]);
    await context.close();
  });
});
