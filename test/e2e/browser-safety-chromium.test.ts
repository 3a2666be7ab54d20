import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

// Debian's Chromium: .ci/run installs it; on a machine without it these page tests are skipped.
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const sendMessage = 'mutation { sendMessage(input: { messages: [{ role: USER, content: "pwned" }] }) { message { content } } }';

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/**
 * What the brief calls "any web page the operator opens": pages on other sites (names mapped to
 * 127.0.0.1 by Chromium's resolver, so they are other sites than Callboard's) try to drive a
 * Callboard that listens on 127.0.0.1, and the fake upstream tells whether anything got through.
 */
describe.skipIf(!existsSync(chromiumPath))('web pages against Callboard in a real browser', () => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let callboard: Server;
  let pages: Server;
  let browser: Browser;
  let callboardPort: number;
  let pagesPort: number;
  const callboardUrl = () => `http://127.0.0.1:${callboardPort}/graphql`;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    pages = createServer((_request, response) => response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>page</title><body></body>'));
    pagesPort = await listen(pages);
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\n[Server]\nCORS_ORIGINS=http://dashboard.test:${pagesPort}\n`;
    testApp = await createTestApp('pglite', testConfig(ini, { OPENAI_API_KEY: 'sk-browser' }));
    callboard = createServer(testApp.app);
    callboardPort = await listen(callboard);
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync',
        '--host-resolver-rules=MAP *.test 127.0.0.1',
      ],
    });
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await Promise.all([callboard, pages].map((server) => server && new Promise((resolve) => server.close(resolve))));
    await testApp?.dispose();
    await fake?.close();
  });
  beforeEach(() => fake.reset());

  async function open(url: string): Promise<Page> {
    const page = await browser.newPage();
    await page.goto(url);
    return page;
  }

  it.each([
    ['application/x-www-form-urlencoded', [['query', sendMessage]]],
    ['multipart/form-data', [['operations', JSON.stringify({ query: sendMessage })], ['map', '{}']]],
    // The classic JSON-in-a-text-form trick: the body reads {"query":"...","padding":"="}.
    ['text/plain', [[`{"query":${JSON.stringify(sendMessage)},"padding":"`, '"}']]],
  ])('a form another site posts as %s runs nothing', { timeout: 60_000 }, async (enctype, fields) => {
    const page = await open(`http://attacker.test:${pagesPort}/`);
    await page.evaluate(
      ({ action, enctype, fields }) => {
        const form = Object.assign(document.createElement('form'), { method: 'POST', action, enctype });
        for (const [name, value] of fields) form.append(Object.assign(document.createElement('input'), { type: 'hidden', name, value }));
        document.body.append(form);
        form.submit();
      },
      { action: callboardUrl(), enctype, fields },
    );
    await page.waitForURL(callboardUrl());
    expect(await page.locator('body').innerText()).toContain('UNSUPPORTED_MEDIA_TYPE');
    expect(fake.requests).toEqual([]);
    await page.close();
  });

  it("another site's fetch runs nothing: no-cors text is refused, JSON is stopped by the preflight", { timeout: 60_000 }, async () => {
    const page = await open(`http://attacker.test:${pagesPort}/`);
    const outcomes = await page.evaluate(async ({ url, query }) => {
      const body = JSON.stringify({ query });
      const noCors = await fetch(url, { method: 'POST', mode: 'no-cors', body }).then((response) => response.type, (error: Error) => error.name);
      const json = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then(
        (response) => `read ${response.status}`,
        (error: Error) => error.name,
      );
      return { noCors, json };
    }, { url: callboardUrl(), query: sendMessage });
    expect(outcomes).toEqual({ noCors: 'opaque', json: 'TypeError' });
    expect(fake.requests).toEqual([]);
    await page.close();
  });

  it("another site's <img> GET of a paid query spends nothing", { timeout: 60_000 }, async () => {
    const page = await open(`http://attacker.test:${pagesPort}/`);
    const source = `${callboardUrl()}?query=${encodeURIComponent('{ embedding(text: "pwned") { dimensions } }')}`;
    const status = await page.evaluate(async (src) => {
      const answered = new Promise((resolve) => {
        const image = Object.assign(new Image(), { src });
        image.onerror = () => resolve('error');
        image.onload = () => resolve('load');
      });
      return answered;
    }, source);
    expect(status).toBe('error');
    expect(fake.requests).toEqual([]);
    await page.close();
  });

  it('a listed origin reads answers and runs calls; an unlisted one on the same server cannot', { timeout: 60_000 }, async () => {
    const run = async (origin: string) => {
      const page = await open(`${origin}/`);
      const outcome = await page.evaluate(async ({ url, query }) => {
        try {
          const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-callboard-actor': 'dashboard' }, body: JSON.stringify({ query }) });
          return (await response.json()) as unknown;
        } catch (error) {
          return (error as Error).name;
        }
      }, { url: callboardUrl(), query: sendMessage });
      await page.close();
      return outcome;
    };
    expect(await run(`http://dashboard.test:${pagesPort}`)).toMatchObject({ data: { sendMessage: { message: { content: expect.any(String) } } } });
    expect(fake.requestsTo('chat')).toHaveLength(1);
    expect(await run(`http://attacker.test:${pagesPort}`)).toBe('TypeError');
    expect(fake.requestsTo('chat')).toHaveLength(1);
  });

  it('a page whose own name was rebound to 127.0.0.1 gets 403, where localhost is served', { timeout: 60_000 }, async () => {
    const sameOriginPost = async (origin: string) => {
      // /health answers any host, so the page can load there, as a rebinding attacker's page would be loaded from its own server.
      const page = await open(`${origin}/health`);
      const outcome = await page.evaluate(async (query) => {
        const response = await fetch('/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
        return { status: response.status, body: (await response.json()) as unknown };
      }, sendMessage);
      await page.close();
      return outcome;
    };
    expect(await sameOriginPost(`http://rebound.test:${callboardPort}`)).toMatchObject({ status: 403, body: { errors: [{ extensions: { code: 'HOST_NOT_ALLOWED' } }] } });
    expect(fake.requests).toEqual([]);
    expect(await sameOriginPost(`http://localhost:${callboardPort}`)).toMatchObject({ status: 200, body: { data: { sendMessage: {} } } });
    expect(fake.requestsTo('chat')).toHaveLength(1);
  });
});
