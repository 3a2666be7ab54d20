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

  beforeAll(async () => {
    testApp = await createTestApp('pglite');
    server = createServer(testApp.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
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
});
