import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { installIntoTemp } from './install.ts';
import type { LoadTarget } from './load.ts';
import { freePort, repositoryRoot, track, type ChildHandle } from './processes.ts';
import { upstreamChatBody } from './scenarios.ts';

/*
 * Peers: other things put in front of the same fake upstream, loaded with the same chat completion
 * as Callboard's cache miss, so that Callboard's figures read as ratios to them. `rest` is
 * Callboard's own OpenAI-compatible door; `portkey` is Portkey's open-source gateway, installed at
 * run time (never committed); `hop` is a bare node:http proxy (bench/hop.ts), the floor.
 */

export type PeerName = 'rest' | 'portkey' | 'hop';
export const peerNames: PeerName[] = ['rest', 'portkey', 'hop'];

export const portkeyVersion = '1.15.2';
/** Later versions break the gateway's Node build (Portkey-AI/gateway issue #1389). */
const honoNodeServerVersion = '1.14.1';

const hopPath = fileURLToPath(new URL('../hop.ts', import.meta.url));
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const benchKey = 'sk-bench-0000000000000000';

export const peerTitles: Record<PeerName, string> = {
  rest: 'Callboard REST door, cache miss',
  portkey: `Portkey gateway ${portkeyVersion}`,
  hop: 'bare node:http hop',
};

/** The cache-miss chat completion, in OpenAI's wire format, a new question per request. */
export function peerTarget(peer: PeerName, origin: string, upstreamOrigin: string, questions: () => string): LoadTarget {
  const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${benchKey}` };
  // Callboard: the cache is looked up and written (a unique question misses), as for the GraphQL miss.
  if (peer === 'rest') Object.assign(headers, { 'x-callboard-cache': 'use', 'x-callboard-tags': 'bench' });
  // Portkey: the provider and its base URL come with each request; no cache, no config.
  if (peer === 'portkey') Object.assign(headers, { 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${upstreamOrigin}/v1` });
  return {
    url: `${origin}/v1/chat/completions`,
    headers,
    body: () => JSON.stringify(upstreamChatBody(questions())),
    verify: (body) => body.includes('"chat.completion"'),
  };
}

/**
 * Installs the gateway once per version into a folder under the system's temporary directory
 * (kept between runs); returns that folder, or throws with npm's complaint (no network, say).
 */
export function installPortkey(log: (message: string) => void): string {
  return installIntoTemp(
    `callboard-bench-portkey-${portkeyVersion}-hono-node-server-${honoNodeServerVersion}`,
    [`@portkey-ai/gateway@${portkeyVersion}`, `@hono/node-server@${honoNodeServerVersion}`],
    'node_modules/@portkey-ai/gateway/build/start-server.js',
    log,
  );
}

export interface Peer extends ChildHandle {
  origin: string;
}

async function waitUntilAnswering(handle: ChildHandle, url: string, what: string, timeoutMs = 60_000): Promise<void> {
  let exitCode: number | null | undefined;
  void handle.exited.then((code) => (exitCode = code));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`${what} exited with ${exitCode}:\n${handle.output.slice(-20).join('\n')}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await handle.stop(2000);
  throw new Error(`${what} did not answer within ${timeoutMs} ms:\n${handle.output.slice(-20).join('\n')}`);
}

/** Portkey's Node build as its `start:node` script runs it, headless, in production mode (no UI, no log stream). */
export async function startPortkey(folder: string): Promise<Peer> {
  const port = await freePort();
  const gateway = join(folder, 'node_modules/@portkey-ai/gateway');
  const child = spawn(process.execPath, ['build/start-server.js', `--port=${port}`, '--headless'], {
    cwd: gateway,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const handle = track(child);
  const origin = `http://127.0.0.1:${port}`;
  // GET / answers "AI Gateway says hey!" once it listens.
  await waitUntilAnswering(handle, `${origin}/`, 'the Portkey gateway');
  return { ...handle, origin };
}

/** bench/hop.ts in a process of its own, forwarding to `upstreamOrigin`. */
export function startHop(upstreamOrigin: string): Promise<Peer> {
  const child = spawn(process.execPath, ['--import', tsxLoader, hopPath], {
    cwd: repositoryRoot,
    env: { PATH: process.env.PATH ?? '', BENCH_HOP_UPSTREAM: upstreamOrigin },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    const handle = track(child, (line) => {
      if (line.startsWith('{')) resolve({ ...handle, origin: (JSON.parse(line) as { url: string }).url });
    });
    void handle.exited.then((code) => reject(new Error(`the hop exited with ${code}:\n${handle.output.join('\n')}`)));
  });
}

/**
 * Where each process runs when the machine has 2 or more cores: the measured server (Callboard or
 * a peer) alone on the last core, the bench (autocannon) and the fake upstream on the others, so
 * that the server's CPU time is not lengthened by theirs. Postgres is left where it is.
 */
export function coreLayout(disabled: boolean): { server: string; others: string } | null {
  const count = cpus().length;
  if (disabled || count < 2) return null;
  return { server: String(count - 1), others: count === 2 ? '0' : `0-${count - 2}` };
}

/** Pins every thread of a process (threads started later inherit it); false when taskset is missing or refuses. */
export function pin(pid: number, cores: string): boolean {
  try {
    execFileSync('taskset', ['-a', '-c', '-p', cores, String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
