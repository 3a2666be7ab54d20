import { Agent, createServer, request as httpRequest, type RequestListener } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** The app behind a real node:http server on 127.0.0.1, as users reach it. */
export interface Listening {
  port: number;
  url: string;
  /** Closes the server, destroying open connections. */
  close(): Promise<void>;
}

export async function listen(handler: RequestListener): Promise<Listening> {
  const server = createServer(handler);
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        for (const socket of sockets) socket.destroy();
      }),
  };
}

export interface HttpAnswer {
  status: number;
  text: string;
  /** From sending the first byte to the end of the answer. */
  ms: number;
  /** Bytes of the body the client had handed to the socket when the answer came. */
  bytesWritten: number;
}

export interface HttpRequestOptions {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Sends the body without a content-length (chunked), in 64 KiB pieces. */
  chunked?: boolean;
  agent?: Agent;
}

/**
 * One request over real HTTP. The body is written in 64 KiB pieces with back-pressure, so a server
 * that answers early and closes the connection is seen answering before the body is all sent; an
 * error after the answer came (the server closed the connection on the rest of the body) is ignored.
 */
export function send(port: number, options: HttpRequestOptions): Promise<HttpAnswer> {
  const body = options.body === undefined ? undefined : Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body);
  const headers: Record<string, string> = { ...options.headers };
  if (body && !options.chunked) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let written = 0;
    let answered = false;
    const outgoing = httpRequest({ host: '127.0.0.1', port, path: options.path, method: options.method ?? 'GET', headers, agent: options.agent });
    outgoing.on('response', (response) => {
      const bytesWritten = written;
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        answered = true;
        resolve({ status: response.statusCode!, text: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - started, bytesWritten });
      });
      response.on('error', (error) => (answered ? undefined : reject(error)));
    });
    outgoing.on('error', (error) => (answered ? undefined : reject(error)));
    if (!body) {
      outgoing.end();
      return;
    }
    const piece = 64 * 1024;
    const pump = () => {
      while (written < body.length) {
        if (outgoing.destroyed) return;
        const more = outgoing.write(body.subarray(written, written + piece));
        written = Math.min(body.length, written + piece);
        if (!more) {
          outgoing.once('drain', pump);
          return;
        }
      }
      outgoing.end();
    };
    pump();
  });
}

export interface GraphQLAnswer {
  status: number;
  ms: number;
  data?: any;
  errors?: { message: string; extensions?: { code?: string; details?: Record<string, unknown> } }[];
}

/** POSTs a GraphQL request (or a body already written as JSON text) and reads the JSON answer. */
export async function postGraphQL(port: number, request: { query: string; variables?: Record<string, unknown> } | string, agent?: Agent): Promise<GraphQLAnswer> {
  const body = typeof request === 'string' ? request : JSON.stringify(request);
  const answer = await send(port, { method: 'POST', path: '/graphql', headers: { 'content-type': 'application/json' }, body, agent });
  let parsed: Omit<GraphQLAnswer, 'status' | 'ms'>;
  try {
    parsed = JSON.parse(answer.text) as Omit<GraphQLAnswer, 'status' | 'ms'>;
  } catch {
    throw new Error(`not a JSON answer (HTTP ${answer.status}): ${answer.text.slice(0, 300)}`);
  }
  return { status: answer.status, ms: answer.ms, ...parsed };
}

export interface HealthReport {
  samples: number;
  /** The slowest answer to /health, from when it was due. */
  rawMaxMs: number;
  /** The slowest answer once each sample over the bound is replaced by one immediate retry. */
  maxMs: number;
  retries: number;
}

/**
 * Asks /health every `intervalMs` until stopped, over one kept-alive connection. A sample's latency
 * runs from when it was due, not from when the timer fired: a blocked event loop delays the timer,
 * and that delay is what a client waiting on the server would see. A sample over `boundMs` is asked
 * again once at once (a loaded 2-core CI machine may stall a process for a moment); `rawMaxMs`
 * still shows the first answer.
 */
export function watchHealth(port: number, options: { boundMs: number; intervalMs?: number; minSamples?: number }): { stop(): Promise<HealthReport> } {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const intervalMs = options.intervalMs ?? 5;
  const report: HealthReport = { samples: 0, rawMaxMs: 0, maxMs: 0, retries: 0 };
  let stopping = false;
  const probe = async (due: number) => {
    const answer = await send(port, { path: '/health', agent });
    if (answer.status !== 200) throw new Error(`/health answered ${answer.status}: ${answer.text}`);
    return performance.now() - due;
  };
  const loop = (async () => {
    let due = performance.now();
    while (!stopping || report.samples < (options.minSamples ?? 3)) {
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      let latency = await probe(due);
      report.rawMaxMs = Math.max(report.rawMaxMs, latency);
      if (latency > options.boundMs) {
        report.retries++;
        latency = await probe(performance.now());
      }
      report.maxMs = Math.max(report.maxMs, latency);
      report.samples++;
      due = Math.max(due + intervalMs, performance.now());
    }
  })();
  return {
    async stop() {
      stopping = true;
      try {
        await loop;
      } finally {
        agent.destroy();
      }
      return report;
    },
  };
}
