import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const mainPath = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const compiledMainPath = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
// Resolved here, not from the child's working directory, which is a temporary folder.
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export interface ServerProcess {
  child: ChildProcess;
  /** The GraphQL endpoint, e.g. http://127.0.0.1:41234/graphql. */
  url: string;
  /** Every line the process printed so far, standard output and error together. */
  output: string[];
  /** Sends the signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `src/main.ts` through tsx (the sources under test; `npm start` runs their build, dist/main.js), or with
 * `compiled` that build as `npm start` runs it (`NODE_ENV=production node dist/main.js`; build it first), and waits
 * until it listens (or fails).
 */
export function startServerProcess(options: { cwd: string; env: Record<string, string>; compiled?: boolean }): Promise<ServerProcess> {
  const child = spawn(process.execPath, options.compiled ? [compiledMainPath] : ['--import', tsxLoader, mainPath], {
    cwd: options.cwd,
    // A spool of its own: servers started in a shared folder (the system's temporary one) must never
    // replay into their database the rows another test's server left behind.
    env: { PATH: process.env.PATH ?? '', ...(options.compiled ? { NODE_ENV: 'production' } : {}), CALLBOARD_SERVER__PORT: '0', CALLBOARD_HISTORY__SPOOL_DIR: mkdtempSync(join(tmpdir(), 'callboard-spool-')), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const onLine = (line: string) => {
      output.push(line);
      const listening = /"url":"([^"]+)".*Callboard is listening/.exec(line);
      if (listening) {
        resolve({
          child,
          url: listening[1]!,
          output,
          stop: (signal = 'SIGTERM') => {
            child.kill(signal);
            return exited;
          },
        });
      }
    };
    for (const stream of [child.stdout!, child.stderr!]) {
      let buffer = '';
      stream.setEncoding('utf8').on('data', (chunk: string) => {
        buffer += chunk;
        const lines = buffer.split('\n');
        buffer = lines.pop()!;
        lines.forEach(onLine);
      });
    }
    void exited.then((code) => reject(Object.assign(new Error(`server exited with ${code}:\n${output.join('\n')}`), { code, output })));
  });
}
