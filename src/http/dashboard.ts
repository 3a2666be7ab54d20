import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Plugin } from 'graphql-yoga';
import { createStaticAssets, etagMatches, staticAssetsFromFolder } from './static-assets.ts';

type FetchAPI = Pick<typeof globalThis, 'Response' | 'Headers'>;

/**
 * The dashboard's page is static: its data comes from /graphql with the key the page was given.
 * Scripts only from this origin (no inline ones), styles only from files, requests only to this
 * origin, and no framing.
 */
export const dashboardContentSecurityPolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export interface DashboardOptions {
  /** The built dashboard: index.html and assets/ (scripts/build.mjs writes dist/dashboard/). */
  directory: string;
}

const assetsPrefix = '/dashboard/assets';
/** The build's page names its files as /dashboard/assets/<name>: served at their versioned URLs instead. */
const builtAssetUrl = /\/dashboard\/assets\/([A-Za-z0-9._-]+)/g;

/**
 * Serves the dashboard: the page at /dashboard and its files under /dashboard/assets/ (static-assets.ts:
 * versioned URLs, immutable, compressed once). Runs after the browser safety plugin (the Host check
 * applies) and before the door: the page and its files hold no data and open without a key; the page
 * then sends the key to /graphql. Nothing is read before the first request.
 */
export function useDashboard(options: DashboardOptions): Plugin {
  const assetsDirectory = join(options.directory, 'assets');
  const indexPath = join(options.directory, 'index.html');
  const assets = createStaticAssets({
    prefix: assetsPrefix,
    load: async () => (existsSync(assetsDirectory) ? staticAssetsFromFolder(assetsDirectory)() : []),
  });
  let page: Promise<{ body: string; etag: string } | null> | null = null;
  const loadPage = () => {
    page ??= (async () => {
      if (!existsSync(indexPath)) return null;
      const urls = await assets.urls();
      const body = (await readFile(indexPath, 'utf8')).replace(builtAssetUrl, (url, name: string) => urls[name] ?? url);
      return { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
    })();
    // An unbuilt dashboard (or a failed read) is looked for again at the next request.
    void page.then((loaded) => {
      if (!loaded) page = null;
    }, () => (page = null));
    return page;
  };
  const plainText = (fetchAPI: FetchAPI, status: number, text: string) =>
    new fetchAPI.Response(text, { status, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' } });
  return {
    onPluginInit({ addPlugin }) {
      addPlugin(assets.plugin);
    },
    async onRequest({ request, url, endResponse, fetchAPI }) {
      const path = url.pathname;
      const isPage = path === '/dashboard' || path === '/dashboard/';
      if (!isPage && !path.startsWith(`${assetsPrefix}/`)) return;
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        endResponse(new fetchAPI.Response(null, { status: 405, headers: { allow: 'GET, HEAD' } }));
        return;
      }
      // The files themselves are answered by the static assets' plugin, next.
      if (!isPage) return;
      const loaded = await loadPage();
      if (!loaded) {
        endResponse(plainText(fetchAPI, 503, 'The dashboard is not built: run `npm run build` (it writes dist/dashboard/).\n'));
        return;
      }
      // The page names the current files: browsers ask again each time (a 304 while it is the same).
      const headers = {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-cache',
        etag: loaded.etag,
        'x-content-type-options': 'nosniff',
        'content-security-policy': dashboardContentSecurityPolicy,
        'x-frame-options': 'DENY',
        'referrer-policy': 'no-referrer',
      };
      const fresh = etagMatches(request.headers.get('if-none-match'), loaded.etag);
      endResponse(new fetchAPI.Response(fresh || request.method === 'HEAD' ? null : loaded.body, { status: fresh ? 304 : 200, headers }));
    },
  };
}
