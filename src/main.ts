import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { createApp } from './app.ts';
import { loadConfig, maxTimerMs } from './config/config.ts';
import { readConfigFiles } from './config/files.ts';
import { createDatabase } from './db/database.ts';
import { migrate, readMigrations } from './db/migrate.ts';
import { ConfigError } from './errors.ts';
import { createLogger } from './logger.ts';
import { startTracing } from './observability/tracing.ts';
import { builtInProviders } from './llm/registry.ts';
import { createServices } from './services.ts';
import { countTextTokens, encodingForModel } from './llm/tokens.ts';
import { isLoopbackHost } from './auth/hosts.ts';
import { startMetricsServer, type MetricsServer } from './observability/metrics-endpoint.ts';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));

/**
 * Left to itself, V8 lets the heap grow to up to four times what its last full collection found alive
 * before it collects again, and gives nothing back when the load stops: after 10,000 calls a server
 * sat at 330 MB of RSS, idle, for about 100 MB of live data. Collecting once the heap has grown by this
 * much keeps it near what is alive, for more frequent full collections. V8 reads the flag at each
 * collection, so setting it here works; `node --heap-growing-percent=<n> dist/main.js` chooses another.
 */
const heapGrowingPercent = 30;
if (!process.execArgv.some((flag) => /^--heap[-_]growing[-_]percent/.test(flag))) setFlagsFromString(`--heap-growing-percent=${heapGrowingPercent}`);
/** After a call's deadline: time for its answer to go out and its history row to be written. */
const shutdownMarginMs = 5_000;
/** A forced stop still waits this long for cut calls to record their attempts, and again for the history to be written. */
const forcedStepMs = 2_000;

const pause = (milliseconds: number) => new Promise<void>((done) => setTimeout(done, milliseconds).unref());

/** How long after listening the warm-ups start, and how often they look again for a moment without requests. */
const warmUpDelayMs = 200;
const warmUpRetryMs = 50;

/**
 * Runs each task in a turn of its own once the server is idle (`busy()` false): a task blocks the event
 * loop (it is synchronous), so it never runs while a request is being handled, nor before /ready has
 * had a chance to answer.
 */
function warmUpWhenIdle(tasks: (() => void)[], busy: () => boolean): void {
  const next = (delayMs: number) => {
    if (tasks.length === 0) return;
    setTimeout(() => {
      if (busy()) return next(warmUpRetryMs);
      tasks.shift()!();
      next(warmUpRetryMs);
    }, delayMs).unref();
  };
  next(warmUpDelayMs);
}

async function main(): Promise<void> {
  let loaded;
  try {
    loaded = loadConfig(readConfigFiles(process.env, repositoryRoot), process.env, { apiTypes: builtInProviders.map((provider) => provider.apiType) });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
  const { config, settings } = loaded;
  const logger = createLogger(config.logging.level);
  if (config.secrets.masterKey === null && !isLoopbackHost(config.server.host)) {
    console.error(
      `Refusing to listen on ${config.server.host} without keys: anyone who can reach it would be an ADMIN. ` +
        'Set CALLBOARD_MASTER_KEY in the environment (then create API keys with `npm run keys -- create`), or bind [Server] HOST to 127.0.0.1.',
    );
    process.exit(1);
  }

  const database = await createDatabase({
    url: config.database.url,
    dataDir: resolve(config.database.dataDir),
    analyticsStatementTimeoutMs: config.limits.analyticsStatementTimeoutMs,
  });
  const { applied } = await migrate(database, await readMigrations(resolve(repositoryRoot, 'prisma/migrations')));
  logger.info({ database: database.kind, location: database.location, applied }, 'database ready');

  const stopNow = new AbortController();
  const services = await createServices({ loaded: { config, settings }, database, logger, signal: stopNow.signal });
  if (services.authenticator.openMode) {
    logger.warn('open mode: no CALLBOARD_MASTER_KEY is set, so requests without a key act as an ADMIN of tenant "default" (loopback only)');
  }
  // Off and free unless OTEL_EXPORTER_OTLP_ENDPOINT is set: nothing of OpenTelemetry is loaded then.
  const tracing = await startTracing(process.env, logger);
  const app = createApp(services, { tracing });
  // [Metrics] PORT: /metrics on a listener of its own, without a key; the main server then has no /metrics.
  let metricsServer: MetricsServer | null = null;
  if (config.metrics.port !== null) {
    metricsServer = await startMetricsServer({ registry: services.metrics.registry, host: config.metrics.host, port: config.metrics.port });
    logger.info({ url: metricsServer.url }, 'metrics are served on a port of their own');
  }
  // Every request's handling, until its resolver has finished: a cut connection ends the response,
  // not the call, which still records its attempts once its upstream request is aborted.
  const handling = new Set<Promise<unknown>>();
  const server = createServer((request, response) => {
    const handled = Promise.resolve(app(request, response)).catch((error: unknown) => logger.error({ err: error }, 'request failed'));
    handling.add(handled);
    void handled.finally(() => handling.delete(handled));
  });
  server.listen(config.server.port, config.server.host, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.server.port;
    logger.info({ url: `http://${config.server.host}:${port}/graphql`, tracing: tracing?.url ?? null }, 'Callboard is listening');
    // Building a tokenizer takes a tenth to a quarter of a second: paid while nothing else is going on, not on a
    // caller's request (the history counts every call's prompt), nor before /ready answers.
    warmUpWhenIdle(
      [...new Set([config.openai.model, config.openai.embeddingModel].map((model) => encodingForModel(model).encoding))].map((encoding) => () => {
        countTextTokens('', encoding === 'cl100k_base' ? 'gpt-4' : 'gpt-4o');
      }),
      // Nor while stopping: the process is about to exit.
      () => handling.size > 0 || phase !== 'running',
    );
  });

  let phase: 'running' | 'draining' | 'forced' = 'running';
  let forceTimer: NodeJS.Timeout | undefined;
  // A function, not a comparison: the phase changes while shutdown awaits, which narrowing cannot see.
  const forced = () => phase === 'forced';
  let onForced = () => {};
  const whenForced = new Promise<void>((done) => (onForced = done));
  /**
   * Aborts every upstream request, shared ones too, so that each call ends with ABORTED and its
   * attempts recorded and, while its connection is still open, answers so; then cuts what is left.
   */
  const force = async (reason: string) => {
    if (phase === 'forced') return;
    phase = 'forced';
    logger.warn({ reason, inFlight: handling.size }, 'stopping now: aborting the calls in flight');
    stopNow.abort();
    await Promise.race([Promise.allSettled([...handling]), pause(forcedStepMs)]);
    server.closeAllConnections();
    onForced();
  };
  const shutdown = async (signal: string) => {
    if (phase === 'forced') {
      logger.error({ signal }, 'stopping at once, history still pending is lost');
      logger.flush();
      process.exit(1);
    }
    if (phase === 'draining') return force(`second ${signal}`);
    phase = 'draining';
    // A call may run until its deadline (CALL_DEADLINE, or its runtime override when longer): that long, and a little more, calls in flight may finish.
    const deadlineSeconds = Math.max(config.openai.callDeadline, services.overrides.settings().callDeadline);
    const graceMs = Math.min(maxTimerMs, deadlineSeconds * 1000 + shutdownMarginMs);
    logger.info({ signal, inFlight: handling.size, graceSeconds: graceMs / 1000 }, 'shutting down: finishing in-flight requests (a second signal stops at once)');
    const closed = new Promise<void>((done) => server.close(() => done()));
    // Subscriptions never end by themselves: they complete now, so that their connections can close.
    void services.callEvents.close();
    // Keep-alive sockets go as soon as their request is answered.
    const sweep = setInterval(() => server.closeIdleConnections(), 50);
    forceTimer = setTimeout(() => void force('grace period over'), graceMs).unref();
    server.closeIdleConnections();
    await closed;
    // Once forced, a cut call gets a moment to record its attempts, not more.
    const settled = () => Promise.allSettled([...handling]);
    await Promise.race([settled(), whenForced.then(() => Promise.race([settled(), pause(forcedStepMs)]))]);
    clearInterval(sweep);
    clearTimeout(forceTimer);
    await app.dispose();
    // Every history row and cache entry still queued is written before the database closes.
    const closing = services.close();
    const { lost } = forced() ? await Promise.race([closing, pause(forcedStepMs).then(() => ({ lost: Number.NaN }))]) : await closing;
    if (Number.isNaN(lost)) logger.error('history rows were still being written when the forced stop ended');
    else await database.close();
    // Scraped until the end: a drain's history and pool metrics are worth seeing.
    await metricsServer?.close();
    // The spans of the last requests, buffered by the batch processor, are sent before the process exits.
    await tracing?.shutdown(forced() ? forcedStepMs : shutdownMarginMs);
    const kept = lost === 0;
    logger.info({ forced: forced(), historyKept: kept }, 'stopped');
    logger.flush();
    // A supervisor sees from the exit code that some of the audit history is missing.
    process.exit(kept ? 0 : 1);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  console.error('Callboard failed to start:', error instanceof Error ? error.message : error);
  process.exit(1);
});
