import { Client, fetchExchange, subscriptionExchange, type CombinedError } from '@urql/core';
import { createClient as createSseClient } from 'graphql-sse';

/** Where the page keeps the key: for this tab only, gone when it closes. */
export const keyStorageName = 'callboard.dashboard.key';

export interface DashboardClient {
  client: Client;
  /** Called with true once the live stream is open, false when it drops. */
  onLive(listener: (live: boolean) => void): () => void;
  dispose(): void;
}

/**
 * An urql client for /graphql on this page's own origin: queries as POSTs with the key as a Bearer
 * token (no cookies), subscriptions over GraphQL over SSE (graphql-sse, "distinct connections"
 * mode, which Yoga serves). Without a key (open mode) nothing is sent.
 */
export function createDashboardClient(key: string): DashboardClient {
  const url = new URL('/graphql', window.location.href).href;
  const headers: Record<string, string> = key ? { authorization: `Bearer ${key}` } : {};
  const listeners = new Set<(live: boolean) => void>();
  const emit = (live: boolean) => listeners.forEach((listener) => listener(live));
  const sse = createSseClient({
    url,
    headers,
    credentials: 'omit',
    retryAttempts: 1_000_000,
    // Back off to at most 10 s between tries while the server is away.
    retry: (retries) => new Promise((resolve) => setTimeout(resolve, Math.min(10_000, 500 * 2 ** retries))),
    on: { connected: () => emit(true), connecting: () => emit(false) },
  });
  const client = new Client({
    url,
    preferGetMethod: false,
    requestPolicy: 'network-only',
    fetchOptions: () => ({ headers, credentials: 'omit' }),
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => {
            const unsubscribe = sse.subscribe({ ...request, query: request.query ?? '' }, {
              next: (value) => sink.next(value as never),
              error: (error) => {
                emit(false);
                sink.error(error);
              },
              complete: () => {
                emit(false);
                sink.complete();
              },
            });
            return { unsubscribe };
          },
        }),
      }),
    ],
  });
  return {
    client,
    onLive: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    dispose: () => sse.dispose(),
  };
}

/** The Callboard error code of a failed operation (UNAUTHENTICATED, FORBIDDEN, ...) and its message. */
export function errorOf(error: CombinedError): { code: string; message: string } {
  for (const graphQLError of error.graphQLErrors) {
    const code = graphQLError.extensions?.code;
    if (typeof code === 'string') return { code, message: graphQLError.message };
  }
  return error.networkError ? { code: 'NETWORK_ERROR', message: error.networkError.message } : { code: 'ERROR', message: error.message };
}
