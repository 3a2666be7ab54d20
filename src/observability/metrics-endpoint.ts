import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Plugin } from 'graphql-yoga';
import type { Registry } from 'prom-client';
import { holdsRole, type Identity } from '../auth/identity.ts';
import { refusal } from '../http/refusal.ts';

export const metricsPath = '/metrics';

/**
 * GET /metrics on the main server, in Prometheus's text format. Protected like the API: the door has
 * decided the request's identity (401 without a valid key once CALLBOARD_MASTER_KEY is set), and only
 * an ADMIN reads it (403 otherwise), since the metrics name every tenant and model. Open mode is open.
 */
export function useMetricsEndpoint(options: { registry: Registry; identityOf: (request: Request) => Identity }): Plugin {
  return {
    async onRequest({ request, url, endResponse, fetchAPI }) {
      if (url.pathname !== metricsPath) return;
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        endResponse(refusal(fetchAPI, url, 404, { code: 'NOT_FOUND', message: `${request.method} is not allowed on ${metricsPath}; use GET.` }));
        return;
      }
      const identity = options.identityOf(request);
      if (!holdsRole(identity, 'ADMIN')) {
        endResponse(
          refusal(fetchAPI, url, 403, {
            code: 'FORBIDDEN',
            message: `GET ${metricsPath} needs the ADMIN role; this key is ${identity.role}.`,
            details: { requiredRole: 'ADMIN', role: identity.role },
          }),
        );
        return;
      }
      endResponse(await metricsResponse(options.registry, fetchAPI));
    },
  };
}

async function metricsResponse(registry: Registry, fetchAPI: { Response: typeof Response }): Promise<Response> {
  return new fetchAPI.Response(await registry.metrics(), { status: 200, headers: { 'content-type': registry.contentType, 'cache-control': 'no-store' } });
}

export interface MetricsServer {
  /** e.g. http://127.0.0.1:9464/metrics */
  url: string;
  close(): Promise<void>;
}

/**
 * [Metrics] PORT: a listener of its own that serves GET /metrics only, without a key (for a
 * Prometheus on the machine, or on a network the operator chose with [Metrics] HOST).
 */
export async function startMetricsServer(options: { registry: Registry; host: string; port: number }): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0];
    if (path !== metricsPath || (request.method !== 'GET' && request.method !== 'HEAD')) {
      response.writeHead(404, { 'content-type': 'application/json; charset=utf-8' }).end(
        JSON.stringify({ error: { message: `This port serves GET ${metricsPath} only.`, type: 'not_found_error', param: null, code: 'NOT_FOUND' } }),
      );
      return;
    }
    options.registry.metrics().then(
      (text) => response.writeHead(200, { 'content-type': options.registry.contentType, 'cache-control': 'no-store' }).end(request.method === 'HEAD' ? undefined : text),
      () => response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics could not be collected\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `http://${host}:${port}${metricsPath}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
