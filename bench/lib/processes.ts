import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
const upstreamPath = fileURLToPath(new URL('../upstream.ts', import.meta.url));
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Clock ticks per second of /proc/<pid>/stat times. */
const clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** User plus system CPU time of a process (all its threads), in milliseconds; 10 ms granularity at 100 ticks/s. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const userTicks = Number(fields[11]);
  const systemTicks = Number(fields[12]);
  return ((userTicks + systemTicks) * 1000) / clockTicks;
}

/** CPU time the whole machine spent busy (every core, every process), in milliseconds, from /proc/stat. */
export function machineBusyMs(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice: guest time is already in user.
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return ((user + nice + system + irq + softirq + steal) * 1000) / clockTicks;
}

/** Resident memory of a process (RSS, `VmRSS`), or its peak so far (`VmHWM`), in bytes. */
export function residentBytes(pid: number, which: 'now' | 'peak' = 'now'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${which === 'now' ? 'VmRSS' : 'VmHWM'}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!match) throw new Error(`no ${which === 'now' ? 'VmRSS' : 'VmHWM'} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** CPU time of a process that may have exited meanwhile (then 0). */
export function cpuTimeOrZero(pid: number): number {
  try {
    return cpuTimeMs(pid);
  } catch {
    return 0;
  }
}

export interface ChildHandle {
  child: ChildProcess;
  pid: number;
  /** The last lines the process printed, standard output and error together. */
  output: string[];
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

export function track(child: ChildProcess, onLine?: (line: string) => void): ChildHandle {
  const output: string[] = [];
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code, signal) => {
      exitCode = code ?? (signal ? 128 : null);
      resolve(exitCode);
    }),
  );
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    let buffer = '';
    stream.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      for (const line of lines) {
        output.push(line);
        if (output.length > 200) output.shift();
        onLine?.(line);
      }
    });
  }
  return {
    child,
    pid: child.pid!,
    output,
    exited,
    async stop(graceMs = 15_000) {
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** A port that was free a moment ago (the server is told to listen on it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface Upstream extends ChildHandle {
  /** e.g. http://127.0.0.1:41234 */
  url: string;
  openaiBaseURL: string;
}

/** Starts bench/upstream.ts (the tests' fake OpenAI) in a child process and waits for its URL. */
export function startUpstream(options: { embeddingDimensions: number }): Promise<Upstream> {
  const child = spawn(process.execPath, ['--import', tsxLoader, upstreamPath], {
    cwd: repositoryRoot,
    env: { PATH: process.env.PATH ?? '', BENCH_EMBEDDING_DIMENSIONS: String(options.embeddingDimensions) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    const handle = track(child, (line) => {
      if (!line.startsWith('{')) return;
      const { url, openaiBaseURL } = JSON.parse(line) as { url: string; openaiBaseURL: string };
      resolve({ ...handle, url, openaiBaseURL });
    });
    void handle.exited.then((code) => reject(new Error(`the fake upstream exited with ${code}:\n${handle.output.join('\n')}`)));
  });
}

/**
 * CALLBOARD_* settings and NODE_ENV of the bench's own environment: handed to the server, for
 * experiments (e.g. CALLBOARD_HISTORY__STORE_BODIES=False or NODE_ENV=production).
 */
export function passedSettings(environment: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return Object.fromEntries(
    Object.entries(environment).filter(
      (entry): entry is [string, string] => (entry[0].startsWith('CALLBOARD_') || entry[0] === 'NODE_ENV') && entry[1] !== undefined,
    ),
  );
}

export interface Server extends ChildHandle {
  /** e.g. http://127.0.0.1:41234 (GraphQL at /graphql). */
  origin: string;
  /** From just before the spawn to the first GET /ready that answered 200 (polled every `pollMs`). */
  readyMs: number;
  /** The process's CPU time (user + system, 10 ms ticks) when /ready first answered. */
  readyCpuMs: number;
}

export interface ServerOptions {
  databaseUrl: string;
  openaiBaseURL: string;
  /** Extra Node.js flags before the script, e.g. `--cpu-prof`. */
  nodeFlags?: string[];
  /** Extra environment (CALLBOARD_* settings). */
  environment?: Record<string, string>;
  /** The checkout whose dist/main.js runs (another commit, to compare). @default this repository */
  root?: string;
  readyTimeoutMs?: number;
  /** How often GET /ready is tried until it answers 200. @default 10 */
  pollMs?: number;
}

const built = new Set<string>();

/**
 * Compiles `root`'s src/ to dist/ unless dist/ was built from the sources as they are (`npm start` does
 * the same first); once per checkout and bench process.
 */
export function buildIfStale(root: string): void {
  if (built.has(root)) return;
  const script = resolve(root, 'scripts/build.mjs');
  if (!existsSync(script)) throw new Error(`${root} has no scripts/build.mjs: the bench runs Callboard compiled (dist/main.js), which that checkout cannot build`);
  const result = spawnSync(process.execPath, [script, '--if-stale'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0) throw new Error(`node scripts/build.mjs --if-stale failed in ${root} (exit ${result.status})`);
  built.add(root);
}

/**
 * Starts Callboard as `npm start` does (`NODE_ENV=production node dist/main.js`, built first if stale, from
 * the repository root so the project's config.ini applies) and waits until GET /ready answers 200.
 */
export async function startServer(options: ServerOptions): Promise<Server> {
  const root = options.root ?? repositoryRoot;
  buildIfStale(root);
  const port = await freePort();
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [...(options.nodeFlags ?? []), resolve(root, 'dist/main.js')], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      // As `npm start` sets it.
      NODE_ENV: 'production',
      DATABASE_URL: options.databaseUrl,
      PORT: String(port),
      CALLBOARD_LOGGING__LEVEL: 'warn',
      CALLBOARD_OPENAI__BASE_URL: options.openaiBaseURL,
      // The bench's database is dropped at the end: rows it spooled must not reach another database later.
      CALLBOARD_HISTORY__SPOOL_DIR: mkdtempSync(join(tmpdir(), 'callboard-bench-spool-')),
      OPENAI_API_KEY: 'sk-bench-0000000000000000',
      ...passedSettings(),
      ...options.environment,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const handle = track(child);
  const origin = `http://127.0.0.1:${port}`;
  const timeoutMs = options.readyTimeoutMs ?? 90_000;
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void handle.exited.then((code) => (exitCode = code));
  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`the server exited with ${exitCode}:\n${handle.output.join('\n')}`);
    try {
      const response = await fetch(`${origin}/ready`, { signal: AbortSignal.timeout(2000) });
      if (response.status === 200) {
        const readyMs = performance.now() - spawnedAt;
        return { ...handle, origin, readyMs, readyCpuMs: cpuTimeMs(handle.pid) };
      }
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 10));
  }
  await handle.stop(2000);
  throw new Error(`the server was not ready within ${timeoutMs} ms:\n${handle.output.join('\n')}`);
}
