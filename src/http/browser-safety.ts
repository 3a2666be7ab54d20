import { GraphQLError, Kind, getOperationAST, type DocumentNode, type ExecutionArgs, type ExecutionResult, type FragmentDefinitionNode, type SelectionSetNode } from 'graphql';
import type { CORSOptions, Plugin } from 'graphql-yoga';
import { isLoopbackHost } from '../auth/hosts.ts';
import type { ErrorCode } from '../errors.ts';
import { adminQueryFields, paidFields } from '../graphql/field-classes.ts';
import { refusal } from './refusal.ts';

export interface BrowserSafetyOptions {
  /** Exact origins (`scheme://host[:port]`) that get CORS headers; empty: none does. */
  corsOrigins: readonly string[];
  /** Host names besides loopback ones that may be named in the `Host` header, when it is checked. */
  allowedHosts: readonly string[];
  /** Whether the `Host` header is checked: in open mode (no master key) only, since keys protect otherwise. */
  checkHost: boolean;
}

/** The content types a browser sends cross-site without asking first (a "simple" request). */
const simpleContentTypes = new Set(['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain']);
/** What a POST to /graphql may carry: JSON (as every GraphQL client sends) or a bare query. None is simple. */
const graphqlContentTypes = new Set(['application/json', 'application/graphql+json', 'application/graphql']);
/** Headers a page may send to a listed origin, besides `x-callboard-*` ones. */
const corsHeaders = ['content-type', 'authorization', 'accept', 'x-request-id'];
/** What a listed origin's page may read of an answer besides the basics: the request's id, and the REST door's call id and cache status. */
const exposedHeaders = ['x-request-id', 'x-callboard-call-id', 'x-callboard-cache-status'];

function contentTypeEssence(value: string | null): string {
  return (value ?? '').split(';')[0]!.trim().toLowerCase();
}



/** The host name of a `Host` header value, normalised as a URL would (case, IPv4 and IPv6 forms); null when it is none. */
export function hostnameOf(host: string): string | null {
  if (!URL.canParse(`http://${host}`)) return null;
  const url = new URL(`http://${host}`);
  if (url.username || url.password || url.pathname !== '/' || url.search || url.hash) return null;
  return url.hostname.replace(/\.$/, '');
}

/**
 * Whether a `Host` header names this server rather than a name an attacker rebound to it (DNS
 * rebinding). A request without one is no browser's: every browser sends it, and node:http refuses
 * HTTP/1.1 without it; only `app.fetch` calls (tests) and HTTP/1.0 clients come here without.
 */
export function isHostAllowed(host: string | null, allowedHosts: readonly string[]): boolean {
  if (host === null) return true;
  const hostname = hostnameOf(host);
  return hostname !== null && (isLoopbackHost(hostname) || allowedHosts.includes(hostname));
}

/**
 * Whether a browser would have asked first (a CORS preflight) before sending this request
 * cross-site, so that only a listed origin's page can have sent it. The rule: an `x-callboard-*`
 * header (e.g. `x-callboard-csrf: 1`), an `authorization: Bearer` header (browsers attach Basic or
 * Digest credentials by themselves, never Bearer), or a content type that is not a simple one.
 */
export function isPreflighted(request: Request): boolean {
  for (const [name, value] of request.headers) {
    if (name.startsWith('x-callboard-')) return true;
    if (name === 'authorization' && /^bearer\s/i.test(value)) return true;
  }
  const contentType = request.headers.get('content-type');
  return contentType !== null && !simpleContentTypes.has(contentTypeEssence(contentType));
}

/** The names of the root fields an operation selects, through fragments, ignoring aliases. */
export function rootFieldNames(document: DocumentNode, operationName?: string | null): Set<string> {
  const operation = getOperationAST(document, operationName);
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  const names = new Set<string>();
  const visited = new Set<string>();
  const collect = (selectionSet: SelectionSetNode) => {
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) names.add(selection.name.value);
      else if (selection.kind === Kind.INLINE_FRAGMENT) collect(selection.selectionSet);
      else if (!visited.has(selection.name.value)) {
        visited.add(selection.name.value);
        const fragment = fragments.get(selection.name.value);
        if (fragment) collect(fragment.selectionSet);
      }
    }
  };
  if (operation) collect(operation.selectionSet);
  return names;
}

/** Yoga's `cors` option: headers for the listed origins only, exactly echoed, without credentials. */
export function createCorsOptions(corsOrigins: readonly string[]): (request: Request) => CORSOptions {
  return (request) => {
    const origin = request.headers.get('origin');
    if (origin === null || !corsOrigins.includes(origin)) return false;
    const requested = (request.headers.get('access-control-request-headers') ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter((name) => name.startsWith('x-callboard-'));
    return {
      // One origin: Yoga's CORS then answers exactly it (Vary is added by useBrowserSafety).
      origin: [origin],
      methods: ['GET', 'POST', 'OPTIONS'],
      allowedHeaders: [...new Set([...corsHeaders, ...requested])],
      exposedHeaders,
      // Callboard uses no cookies: a page's API key travels in a header it sets itself.
      credentials: false,
      maxAge: 600,
    };
  };
}

/** Refuses paid and admin root fields over a GET that no page could have been stopped from sending. */
function refuseUnsafeGet({ args, setResultAndStopExecution }: { args: Pick<ExecutionArgs, 'contextValue' | 'document' | 'operationName'>; setResultAndStopExecution(result: ExecutionResult): void }): void {
  const request = (args.contextValue as { request?: Request }).request;
  if (request?.method !== 'GET' || isPreflighted(request)) return;
  const refused = [...rootFieldNames(args.document, args.operationName)].filter((name) => paidFields.has(name) || adminQueryFields.has(name));
  if (refused.length === 0) return;
  setResultAndStopExecution({
    errors: [
      new GraphQLError(
        `${refused.join(', ')} cannot run from a GET without a preflight-forcing header, since any web page can send a GET; ` +
          'use POST with content-type application/json, or send the header x-callboard-csrf: 1.',
        { extensions: { code: 'CSRF_PREVENTED' satisfies ErrorCode, details: { fields: refused }, http: { status: 403 } } },
      ),
    ],
  });
}

/**
 * Keeps web pages the operator opens from driving Callboard: no operation runs from a body a
 * browser posts cross-site without a preflight (form, multipart, text), a GET (an `<img>`, a link)
 * runs paid or admin root fields only when preflighted, and in open mode the `Host` header must
 * name this machine (DNS rebinding). /health and the GraphiQL page are answered before this runs.
 */
export function useBrowserSafety(options: BrowserSafetyOptions): Plugin {
  return {
    onRequest({ request, url, endResponse, fetchAPI }) {
      if (options.checkHost && !isHostAllowed(request.headers.get('host'), options.allowedHosts)) {
        endResponse(
          refusal(fetchAPI, url, 403, {
            code: 'HOST_NOT_ALLOWED',
            message:
              `Host "${request.headers.get('host')}" is not allowed: Callboard runs without CALLBOARD_MASTER_KEY, so it answers loopback names only. ` +
              'Add the host to [Server] ALLOWED_HOSTS, or set CALLBOARD_MASTER_KEY.',
          }),
        );
      }
    },
    onRequestParse({ request, url, endResponse, fetchAPI }) {
      if (request.method !== 'POST') return;
      const contentType = request.headers.get('content-type');
      if (graphqlContentTypes.has(contentTypeEssence(contentType))) return;
      endResponse(
        refusal(
          fetchAPI,
          url,
          415,
          {
            code: 'UNSUPPORTED_MEDIA_TYPE',
            message:
              `POST /graphql takes content-type application/json, got ${contentType === null ? 'none' : `"${contentType}"`}; ` +
              'form, multipart and text bodies are refused because any web page can send them cross-site.',
          },
          { accept: 'application/json' },
        ),
      );
    },
    // Subscriptions too: an EventSource is a GET any page can open.
    onExecute: refuseUnsafeGet,
    onSubscribe: refuseUnsafeGet,
    onResponse({ response }) {
      // Answers differ by Origin once any origin is listed: caches must not hand one origin's answer to another.
      if (options.corsOrigins.length === 0) return;
      const vary = response.headers.get('vary');
      if (!vary?.toLowerCase().split(',').some((name) => name.trim() === 'origin')) response.headers.append('vary', 'Origin');
    },
  };
}
