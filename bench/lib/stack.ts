import { createBenchDatabase, dropBenchDatabase } from './database.ts';
import { startServer, startUpstream, type Server, type Upstream } from './processes.ts';

export interface StackOptions {
  /** A Postgres URL whose server hosts the bench database (created and dropped here). */
  adminUrl: string;
  databaseName: string;
  embeddingDimensions: number;
  /** Extra Node.js flags for Callboard, e.g. `--cpu-prof`. */
  serverNodeFlags?: string[];
  /** Another checkout of Callboard to run instead of this one (with its node_modules and generated client). */
  serverRoot?: string;
}

/** The fake upstream and Callboard over a fresh database; `close()` is safe to call at any point and twice. */
export interface Stack {
  databaseUrl: string | undefined;
  upstream: Upstream | undefined;
  server: Server | undefined;
  start(): Promise<{ databaseUrl: string; upstream: Upstream; server: Server }>;
  /** Stops Callboard (SIGTERM: it writes what is pending) and the upstream, then drops the database. */
  close(): Promise<void>;
}

export function createStack(options: StackOptions): Stack {
  let closing: Promise<void> | undefined;
  let databaseCreated = false;
  const stack: Stack = {
    databaseUrl: undefined,
    upstream: undefined,
    server: undefined,
    async start() {
      const [databaseUrl, upstream] = await Promise.all([
        createBenchDatabase(options.adminUrl, options.databaseName).then((url) => {
          databaseCreated = true;
          return url;
        }),
        startUpstream({ embeddingDimensions: options.embeddingDimensions }).then((started) => (stack.upstream = started)),
      ]);
      stack.databaseUrl = databaseUrl;
      const server = await startServer({ databaseUrl, openaiBaseURL: upstream.openaiBaseURL, nodeFlags: options.serverNodeFlags, root: options.serverRoot });
      stack.server = server;
      return { databaseUrl, upstream, server };
    },
    close() {
      closing ??= (async () => {
        await Promise.allSettled([stack.server?.stop(), stack.upstream?.stop()]);
        if (databaseCreated) {
          await dropBenchDatabase(options.adminUrl, options.databaseName).catch((error: unknown) =>
            console.error('could not drop the bench database:', error instanceof Error ? error.message : error),
          );
        }
      })();
      return closing;
    },
  };
  return stack;
}

/** The settings both bench entry points read from the environment. */
export function stackOptionsFromEnvironment(environment: NodeJS.ProcessEnv): StackOptions {
  return {
    adminUrl: environment.BENCH_DATABASE_URL || 'postgresql://postgres@127.0.0.1:5432/test',
    databaseName: environment.BENCH_DATABASE_NAME || 'callboard_bench',
    embeddingDimensions: Number(environment.BENCH_EMBEDDING_DIMENSIONS || 1536),
    serverRoot: environment.BENCH_SERVER_ROOT || undefined,
  };
}
