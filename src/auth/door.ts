import type { Plugin } from 'graphql-yoga';
import { isCallboardError } from '../errors.ts';
import { refusal } from '../http/refusal.ts';
import type { Authenticator, Identity } from './identity.ts';

/**
 * The door: decides each request's identity once, before anything runs, and answers 401 with a
 * coded body when it has none. What it decided is read back with `identityOf(request)`.
 */
export function createDoor(authenticator: Authenticator) {
  const identities = new WeakMap<Request, Identity>();
  /** GraphiQL's page holds no data: it opens without a key, and its requests carry one. Any other path (/metrics) needs its key. */
  const isGraphiqlPage = (request: Request, url: URL) =>
    url.pathname === '/graphql' && request.method === 'GET' && !url.searchParams.has('query') && (request.headers.get('accept') ?? '').includes('text/html');

  const plugin: Plugin = {
    async onRequest({ request, url, endResponse, fetchAPI }) {
      if (url.pathname === '/health' || url.pathname === '/ready' || isGraphiqlPage(request, url)) return;
      try {
        identities.set(request, await authenticator.authenticate(request.headers.get('authorization')));
      } catch (error) {
        if (!isCallboardError(error)) throw error;
        endResponse(refusal(fetchAPI, url, 401, error, { 'www-authenticate': 'Bearer realm="callboard"' }));
      }
    },
  };
  return {
    plugin,
    identityOf(request: Request): Identity {
      const identity = identities.get(request);
      if (!identity) throw new Error('No identity for this request: the door plugin did not run.');
      return identity;
    },
    /** The identity, when the door decided one (not for /health, /ready, GraphiQL's page, nor a refused key). */
    identityIfAny(request: Request): Identity | undefined {
      return identities.get(request);
    },
  };
}
