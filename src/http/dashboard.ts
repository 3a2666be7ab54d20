import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { brotliCompressSync, constants as zlibConstants, gzipSync } from 'node:zlib';
import type { Plugin } from 'graphql-yoga';

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

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};
/** Worth compressing: text. */
const compressible = new Set(['.html', '.js', '.css', '.txt', '.svg']);

interface StaticFile {
  contentType: string;
  etag: string;
  cacheControl: string;
  identity: Uint8Array;
  gzip?: Uint8Array;
  br?: Uint8Array;
}

function loadFile(path: string, cacheControl: string): StaticFile {
  const body = readFileSync(path);
  const extension = extname(path);
  const file: StaticFile = {
    contentType: contentTypes[extension] ?? 'application/octet-stream',
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
    cacheControl,
    identity: body,
  };
  if (compressible.has(extension) && body.length > 512) {
    file.gzip = gzipSync(body, { level: 9 });
    file.br = brotliCompressSync(body, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: body.length } });
  }
  return file;
}

/** The encodings a request accepts (q > 0), from its Accept-Encoding header. */
function acceptedEncodings(header: string | null): Set<string> {
  const accepted = new Set<string>();
  for (const part of (header ?? '').slice(0, 1024).split(',')) {
    const [name, ...parameters] = part.trim().toLowerCase().split(';');
    const q = parameters.map((parameter) => /^\s*q=([0-9.]+)\s*$/.exec(parameter)).find(Boolean);
    if (name && (!q || Number(q[1]) > 0)) accepted.add(name);
  }
  return accepted;
}

/**
 * Answers a GET or HEAD for one static file: the best encoding the client accepts (br, then gzip,
 * else none), ETag and If-None-Match (304), Vary: Accept-Encoding. The only place that knows how a
 * file goes out: swap it for a shared static-file module without touching the routing.
 */
export function serveStaticFile(fetchAPI: FetchAPI, request: Request, file: StaticFile, extraHeaders: Record<string, string> = {}): Response {
  const headers = new fetchAPI.Headers({
    'content-type': file.contentType,
    'cache-control': file.cacheControl,
    etag: file.etag,
    vary: 'Accept-Encoding',
    'x-content-type-options': 'nosniff',
    ...extraHeaders,
  });
  const ifNoneMatch = request.headers.get('if-none-match');
  if (ifNoneMatch && ifNoneMatch.split(',').some((tag) => tag.trim().replace(/^W\//, '') === file.etag)) {
    return new fetchAPI.Response(null, { status: 304, headers });
  }
  const accepted = acceptedEncodings(request.headers.get('accept-encoding'));
  let body = file.identity;
  if (file.br && accepted.has('br')) {
    body = file.br;
    headers.set('content-encoding', 'br');
  } else if (file.gzip && (accepted.has('gzip') || accepted.has('x-gzip'))) {
    body = file.gzip;
    headers.set('content-encoding', 'gzip');
  }
  headers.set('content-length', String(body.length));
  return new fetchAPI.Response(request.method === 'HEAD' ? null : (body as Uint8Array<ArrayBuffer>), { status: 200, headers });
}

export interface DashboardOptions {
  /** The built dashboard: index.html and assets/ (scripts/build.mjs writes dist/dashboard/). */
  directory: string;
}

/**
 * Serves the dashboard: the page at /dashboard and its content-hashed files at
 * /dashboard/assets/<name> (immutable: a new build has new names). Runs after the browser safety
 * plugin (the Host check applies) and before the door: the page and its files hold no data and
 * open without a key; the page then sends the key to /graphql.
 */
export function useDashboard(options: DashboardOptions): Plugin {
  let loaded: { page: StaticFile; assets: Map<string, StaticFile> } | null = null;
  const load = () => {
    if (loaded) return loaded;
    const assetsDirectory = join(options.directory, 'assets');
    const indexPath = join(options.directory, 'index.html');
    if (!existsSync(indexPath) || !existsSync(assetsDirectory)) return null;
    const assets = new Map<string, StaticFile>();
    for (const name of readdirSync(assetsDirectory)) assets.set(name, loadFile(join(assetsDirectory, name), 'public, max-age=31536000, immutable'));
    // The page names the current files: browsers ask again each time (a 304 while it is the same).
    loaded = { page: loadFile(indexPath, 'no-cache'), assets };
    return loaded;
  };
  const pageHeaders = {
    'content-security-policy': dashboardContentSecurityPolicy,
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
  };
  return {
    onRequest({ request, url, endResponse, fetchAPI }) {
      const path = url.pathname;
      if (path !== '/dashboard' && path !== '/dashboard/' && !path.startsWith('/dashboard/assets/')) return;
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        endResponse(new fetchAPI.Response(null, { status: 405, headers: { allow: 'GET, HEAD' } }));
        return;
      }
      const files = load();
      if (!files) {
        endResponse(
          new fetchAPI.Response('The dashboard is not built: run `npm run build` (it writes dist/dashboard/).\n', {
            status: 503,
            headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
          }),
        );
        return;
      }
      if (path === '/dashboard' || path === '/dashboard/') {
        endResponse(serveStaticFile(fetchAPI, request, files.page, pageHeaders));
        return;
      }
      const file = files.assets.get(path.slice('/dashboard/assets/'.length));
      endResponse(
        file
          ? serveStaticFile(fetchAPI, request, file, { 'content-security-policy': dashboardContentSecurityPolicy })
          : new fetchAPI.Response('Not found\n', { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' } }),
      );
    },
  };
}
