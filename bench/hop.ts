import { createServer } from 'node:http';

// The bench's bare hop: the least a proxy in Node.js can do (read the body, forward it with fetch,
// pipe the answer back), a floor for what any gateway's own work costs. It prints one JSON line with its URL.

const upstream = process.env.BENCH_HOP_UPSTREAM;
if (!upstream) throw new Error('BENCH_HOP_UPSTREAM (the fake upstream origin) is not set');
/** A loopback bench tool, but a body is still bounded. */
const maxBodyBytes = 1024 * 1024;

const server = createServer(async (request, response) => {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBodyBytes) {
      response.writeHead(413).end();
      request.destroy();
      return;
    }
    chunks.push(chunk);
  }
  try {
    const answer = await fetch(`${upstream}${request.url ?? '/'}`, {
      method: request.method,
      headers: { 'content-type': request.headers['content-type'] ?? 'application/json', authorization: request.headers.authorization ?? '' },
      body: request.method === 'GET' || request.method === 'HEAD' ? undefined : Buffer.concat(chunks),
    });
    response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
    if (answer.body) for await (const chunk of answer.body) response.write(chunk);
    response.end();
  } catch (error) {
    if (!response.headersSent) response.writeHead(502, { 'content-type': 'text/plain' });
    response.end(error instanceof Error ? error.message : String(error));
  }
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The bench is the only reader of standard input: when it goes away, so does the hop.
process.stdin.on('end', stop).resume();

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  console.log(JSON.stringify({ url: `http://127.0.0.1:${port}` }));
});
