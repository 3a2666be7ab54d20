import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlib, gzip } from 'node:zlib';
import type { Plugin } from 'graphql-yoga';
import { refusal } from './refusal.ts';

/** One file of a set. */
export interface StaticAsset {
  /** Its name in URLs, e.g. `graphiql.js` or `chunks/app.js` (letters, digits, `.`, `-`, `_` and `/`). */
  name: string;
  body: string | Uint8Array;
  /** Guessed from the name's extension when left out. */
  contentType?: string;
}

export interface StaticAssetsOptions {
  /** The URL path the set is served under, e.g. `/graphiql-assets`: each file at `<prefix>/<version>/<name>`. */
  prefix: string;
  /** Reads the files: called once, on the first `urls()` or request under the prefix (never at start); again after a failure. */
  load: () => Promise<StaticAsset[]> | StaticAsset[];
}

export interface StaticAssets {
  /** A Yoga plugin that answers GET and HEAD under the prefix. */
  plugin: Plugin;
  /** The URL path of each file, by name (loads the set if needed). */
  urls(): Promise<Record<string, string>>;
}

type Encoding = 'br' | 'gzip';

interface LoadedAsset {
  body: Buffer;
  contentType: string;
  /** The content's hash, quoted: the ETag of the uncompressed answer. */
  hash: string;
  /** Each encoding compressed once, on its first request; null when compressing does not pay. */
  encoded: Map<Encoding, Promise<Buffer | null>>;
}

interface LoadedSet {
  /** A hash of every name and content: any change gives every file a new URL. */
  version: string;
  assets: Map<string, LoadedAsset>;
}

const contentTypes: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
};

/** Formats that are not compressed already (images, fonts and archives are). */
const compressible = /^(text\/|application\/(json|wasm)|image\/(svg\+xml|x-icon))/;
/** Smaller files gain nothing worth a compressed copy. */
const minCompressBytes = 1024;
/** Brotli's quality: 6 compresses GraphiQL's 5 MB script in about 0.3 s of CPU (11: 10 s, for 12% less). */
const brotliQuality = 6;

const assetName = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

const compressors: Record<Encoding, (body: Buffer) => Promise<Buffer>> = {
  br: (body) =>
    promisify(brotliCompress)(body, {
      params: { [zlib.BROTLI_PARAM_QUALITY]: brotliQuality, [zlib.BROTLI_PARAM_SIZE_HINT]: body.length },
    }),
  gzip: (body) => promisify(gzip)(body, { level: 9 }),
};

const quoted = (hash: string) => `"${hash}"`;

/**
 * The encoding to answer with, from Accept-Encoding: br, then gzip, among those the client accepts
 * (q above 0, named or through `*`), the higher q first; null for none (identity).
 */
export function negotiateEncoding(acceptEncoding: string | null, available: readonly Encoding[] = ['br', 'gzip']): Encoding | null {
  if (!acceptEncoding) return null;
  const weights = new Map<string, number>();
  for (const part of acceptEncoding.slice(0, 1000).split(',')) {
    const [coding, ...parameters] = part.split(';').map((piece) => piece.trim().toLowerCase());
    if (!coding) continue;
    let q = 1;
    for (const parameter of parameters) {
      const match = /^q=([01](\.\d{0,3})?)$/.exec(parameter.replace(/\s+/g, ''));
      if (match) q = Number(match[1]);
    }
    weights.set(coding === 'x-gzip' ? 'gzip' : coding, q);
  }
  let best: Encoding | null = null;
  let bestQ = 0;
  for (const encoding of available) {
    const q = weights.get(encoding) ?? weights.get('*') ?? 0;
    if (q > bestQ) {
      best = encoding;
      bestQ = q;
    }
  }
  return best;
}

/** Whether If-None-Match names this ETag (weak comparison, as RFC 9110 asks for it). */
export function etagMatches(ifNoneMatch: string | null, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch
    .slice(0, 4000)
    .split(',')
    .map((tag) => tag.trim().replace(/^W\//, ''))
    .some((tag) => tag === '*' || tag === etag);
}

/**
 * A set of immutable files served under a URL prefix: each at a URL holding the set's content hash,
 * with `Cache-Control: public, max-age=31536000, immutable`, an ETag (If-None-Match: 304), and
 * brotli or gzip as Accept-Encoding asks, compressed once and kept in memory (`Vary: Accept-Encoding`).
 * Nothing is read before it is first needed. For GraphiQL's scripts (src/http/graphiql.ts) and a
 * dashboard's bundle (`staticAssetsFromFolder`).
 */
export function createStaticAssets(options: StaticAssetsOptions): StaticAssets {
  const prefix = options.prefix.replace(/\/+$/, '');
  let loading: Promise<LoadedSet> | null = null;

  const load = (): Promise<LoadedSet> => {
    loading ??= (async () => {
      const files = await options.load();
      const setHash = createHash('sha256');
      const assets = new Map<string, LoadedAsset>();
      for (const file of [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
        if (!assetName.test(file.name) || file.name.split('/').includes('..')) throw new Error(`static asset name "${file.name}" is not a plain relative path`);
        const body = typeof file.body === 'string' ? Buffer.from(file.body, 'utf8') : Buffer.from(file.body.buffer, file.body.byteOffset, file.body.byteLength);
        const hash = createHash('sha256').update(body).digest('base64url').slice(0, 27);
        setHash.update(file.name).update('\0').update(hash).update('\0');
        const contentType = file.contentType ?? contentTypes[extname(file.name).toLowerCase()] ?? 'application/octet-stream';
        assets.set(file.name, { body, contentType, hash, encoded: new Map() });
      }
      return { version: setHash.digest('base64url').slice(0, 16), assets };
    })();
    // A failed read is tried again on the next request, not kept.
    loading.catch(() => {
      loading = null;
    });
    return loading;
  };

  const encodedBody = (asset: LoadedAsset, encoding: Encoding): Promise<Buffer | null> => {
    let encoded = asset.encoded.get(encoding);
    if (!encoded) {
      encoded =
        asset.body.length < minCompressBytes || !compressible.test(asset.contentType)
          ? Promise.resolve(null)
          : compressors[encoding](asset.body).then((compressed) => (compressed.length < asset.body.length * 0.9 ? compressed : null));
      asset.encoded.set(encoding, encoded);
      encoded.catch(() => asset.encoded.delete(encoding));
    }
    return encoded;
  };

  const plugin: Plugin = {
    async onRequest({ request, url, endResponse, fetchAPI }) {
      if (!url.pathname.startsWith(`${prefix}/`) || (request.method !== 'GET' && request.method !== 'HEAD')) return;
      const set = await load();
      const rest = url.pathname.slice(prefix.length + 1);
      const slash = rest.indexOf('/');
      const asset = slash > 0 && rest.slice(0, slash) === set.version ? set.assets.get(rest.slice(slash + 1)) : undefined;
      if (!asset) {
        endResponse(refusal(fetchAPI, url, 404, { code: 'NOT_FOUND', message: `No file at ${url.pathname.slice(0, 200)} (an older version's files are not kept).` }));
        return;
      }
      let encoding = negotiateEncoding(request.headers.get('accept-encoding'));
      let body = asset.body;
      if (encoding) {
        const encoded = await encodedBody(asset, encoding);
        if (encoded) body = encoded;
        else encoding = null;
      }
      const etag = quoted(encoding ? `${asset.hash}-${encoding}` : asset.hash);
      const headers: Record<string, string> = {
        etag,
        'cache-control': 'public, max-age=31536000, immutable',
        vary: 'Accept-Encoding',
        'x-content-type-options': 'nosniff',
      };
      if (etagMatches(request.headers.get('if-none-match'), etag)) {
        endResponse(new fetchAPI.Response(null, { status: 304, headers }));
        return;
      }
      headers['content-type'] = asset.contentType;
      headers['content-length'] = String(body.length);
      if (encoding) headers['content-encoding'] = encoding;
      endResponse(new fetchAPI.Response(request.method === 'HEAD' ? null : (body as Uint8Array<ArrayBuffer>), { status: 200, headers }));
    },
  };

  return {
    plugin,
    async urls() {
      const set = await load();
      return Object.fromEntries([...set.assets.keys()].map((name) => [name, `${prefix}/${set.version}/${name}`]));
    },
  };
}

/** Every file of a folder (its subfolders too) as a set, for `createStaticAssets({ load })`: a built bundle. */
export function staticAssetsFromFolder(folder: string): () => Promise<StaticAsset[]> {
  return async () => {
    const entries = await readdir(folder, { recursive: true, withFileTypes: true });
    const files = entries.filter((entry) => entry.isFile());
    return Promise.all(
      files.map(async (entry) => {
        const path = join(entry.parentPath, entry.name);
        return { name: path.slice(folder.replace(/[\\/]+$/, '').length + 1).split(sep).join('/'), body: await readFile(path) };
      }),
    );
  };
}
