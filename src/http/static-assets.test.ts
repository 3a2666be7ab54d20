import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { createSchema, createYoga } from 'graphql-yoga';
import { afterAll, describe, expect, it } from 'vitest';
import { createStaticAssets, negotiateEncoding, staticAssetsFromFolder, type StaticAsset } from './static-assets.ts';

// Text that compresses well, large enough to be worth it.
const script = Array.from({ length: 2000 }, (_value, index) => `console.log("line ${index}");`).join('\n');

function setUp(files: StaticAsset[] | (() => Promise<StaticAsset[]>)) {
  let loads = 0;
  const assets = createStaticAssets({
    prefix: '/assets/',
    load: async () => {
      loads += 1;
      return typeof files === 'function' ? files() : files;
    },
  });
  const yoga = createYoga({ schema: createSchema({ typeDefs: 'type Query { ok: Boolean }' }), plugins: [assets.plugin], logging: false, landingPage: false });
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => yoga.fetch(`http://callboard${path}`, { method, headers });
  return { assets, get, loads: () => loads };
}

describe('negotiateEncoding', () => {
  it.each([
    [null, null],
    ['', null],
    ['gzip, deflate, br', 'br'],
    ['gzip', 'gzip'],
    ['x-gzip', 'gzip'],
    ['br;q=0, gzip', 'gzip'],
    ['br;q=0.5, gzip;q=0.8', 'gzip'],
    ['br;q=0.8, gzip;q=0.8', 'br'],
    ['*', 'br'],
    ['*;q=0, gzip', 'gzip'],
    ['identity', null],
    ['deflate', null],
    ['BR', 'br'],
    ['gzip;q=0', null],
  ])('%j → %j', (header, expected) => {
    expect(negotiateEncoding(header)).toBe(expected);
  });
});

describe('createStaticAssets', () => {
  it('reads nothing until asked, then once for concurrent requests; each file at a URL with the set version', async () => {
    const { assets, get, loads } = setUp([
      { name: 'app.js', body: script },
      { name: 'nested/style.css', body: 'body { color: red }' },
    ]);
    expect(loads()).toBe(0);
    const [urls] = await Promise.all([assets.urls(), get('/assets/x/app.js'), get('/assets/y/app.js')]);
    expect(loads()).toBe(1);
    expect(urls['app.js']).toMatch(/^\/assets\/[A-Za-z0-9_-]{16}\/app\.js$/);
    expect(urls['nested/style.css']).toBe(urls['app.js']!.replace('app.js', 'nested/style.css'));
    const css = await get(urls['nested/style.css']!);
    expect(css.status).toBe(200);
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    expect(await css.text()).toBe('body { color: red }');
  });

  it('answers compressed as Accept-Encoding asks, compressed once, immutable, with an ETag per encoding', async () => {
    const { assets, get } = setUp([{ name: 'app.js', body: script }]);
    const url = (await assets.urls())['app.js']!;
    const br = await get(url, { 'accept-encoding': 'gzip, deflate, br' });
    expect(br.status).toBe(200);
    expect(br.headers.get('content-encoding')).toBe('br');
    expect(br.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(br.headers.get('vary')).toBe('Accept-Encoding');
    expect(br.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const brBody = Buffer.from(await br.arrayBuffer());
    expect(Number(br.headers.get('content-length'))).toBe(brBody.length);
    expect(brBody.length).toBeLessThan(script.length / 5);
    expect(brotliDecompressSync(brBody).toString()).toBe(script);

    const gzip = await get(url, { 'accept-encoding': 'gzip' });
    expect(gzip.headers.get('content-encoding')).toBe('gzip');
    expect(gunzipSync(Buffer.from(await gzip.arrayBuffer())).toString()).toBe(script);

    const plain = await get(url);
    expect(plain.headers.get('content-encoding')).toBeNull();
    expect(await plain.text()).toBe(script);

    const etags = [br, gzip, plain].map((response) => response.headers.get('etag'));
    expect(new Set(etags).size).toBe(3);
    for (const etag of etags) expect(etag).toMatch(/^"[A-Za-z0-9_-]+"$/);
    // The same bytes each time: compressed once, kept.
    expect(Buffer.from(await (await get(url, { 'accept-encoding': 'br' })).arrayBuffer()).equals(brBody)).toBe(true);
  });

  it('answers 304 to an If-None-Match that names the ETag of the encoding it would send', async () => {
    const { assets, get } = setUp([{ name: 'app.js', body: script }]);
    const url = (await assets.urls())['app.js']!;
    const first = await get(url, { 'accept-encoding': 'br' });
    const etag = first.headers.get('etag')!;
    const again = await get(url, { 'accept-encoding': 'br', 'if-none-match': etag });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');
    expect(again.headers.get('etag')).toBe(etag);
    expect(again.headers.get('cache-control')).toContain('immutable');
    expect((await get(url, { 'accept-encoding': 'br', 'if-none-match': `"other", W/${etag}` })).status).toBe(304);
    expect((await get(url, { 'accept-encoding': 'br', 'if-none-match': '*' })).status).toBe(304);
    // The gzip answer has another ETag: the br one does not match it.
    expect((await get(url, { 'accept-encoding': 'gzip', 'if-none-match': etag })).status).toBe(200);
  });

  it('sends small files and formats compressed already as they are', async () => {
    const png = Buffer.alloc(4096, 7);
    const { assets, get } = setUp([
      { name: 'tiny.js', body: 'let a = 1;' },
      { name: 'image.png', body: png },
    ]);
    const urls = await assets.urls();
    const tiny = await get(urls['tiny.js']!, { 'accept-encoding': 'br' });
    expect(tiny.headers.get('content-encoding')).toBeNull();
    expect(await tiny.text()).toBe('let a = 1;');
    const image = await get(urls['image.png']!, { 'accept-encoding': 'br, gzip' });
    expect(image.headers.get('content-encoding')).toBeNull();
    expect(image.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await image.arrayBuffer()).equals(png)).toBe(true);
  });

  it('answers 404 with a code for another version or an unknown name, and HEAD without a body', async () => {
    const { assets, get } = setUp([{ name: 'app.js', body: script }]);
    const url = (await assets.urls())['app.js']!;
    for (const path of ['/assets/0000000000000000/app.js', url.replace('app.js', 'other.js'), url.replace('app.js', '../app.js'), '/assets/', '/assets/app.js']) {
      const missing = await get(path);
      expect(missing.status, path).toBe(404);
      expect((await missing.json()).errors[0].extensions.code).toBe('NOT_FOUND');
    }
    const head = await get(url, { 'accept-encoding': 'gzip' }, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers.get('content-encoding')).toBe('gzip');
    expect(await head.text()).toBe('');
    // Paths outside the prefix are not its business.
    expect((await get('/graphql?query={ok}')).status).toBe(200);
  });

  it('reads the files again after a failed read', async () => {
    let fail = true;
    const { get, assets, loads } = setUp(async () => {
      if (fail) throw new Error('not built yet');
      return [{ name: 'app.js', body: script }];
    });
    // The error goes to the server's handler (a 500 over HTTP).
    const failed = await Promise.resolve(get('/assets/x/app.js')).then((response: Response) => response.status, (error: Error) => error.message);
    expect([500, 'not built yet']).toContain(failed);
    fail = false;
    const url = (await assets.urls())['app.js']!;
    expect((await get(url)).status).toBe(200);
    expect(loads()).toBe(2);
  });

  it('refuses a file name that is no plain relative path', async () => {
    const { assets } = setUp([{ name: '../secret', body: 'x' }]);
    await expect(assets.urls()).rejects.toThrow('not a plain relative path');
  });
});

describe('staticAssetsFromFolder', () => {
  const folder = mkdtempSync(join(tmpdir(), 'callboard-assets-'));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it('serves every file of a folder and its subfolders by relative name', async () => {
    mkdirSync(join(folder, 'chunks'));
    writeFileSync(join(folder, 'index.js'), script);
    writeFileSync(join(folder, 'chunks', 'chart.js'), 'export const chart = 1;');
    const { assets, get } = setUp(staticAssetsFromFolder(folder));
    const urls = await assets.urls();
    expect(Object.keys(urls).sort()).toEqual(['chunks/chart.js', 'index.js']);
    expect(await (await get(urls['chunks/chart.js']!)).text()).toBe('export const chart = 1;');
  });
});
