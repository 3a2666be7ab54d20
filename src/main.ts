import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { createApp } from './app.ts';
import { loadConfig } from './config/config.ts';
import { readConfigFiles } from './config/files.ts';
import { createDatabase } from './db/database.ts';
import { migrate, readMigrations } from './db/migrate.ts';
import { ConfigError } from './errors.ts';
import { createLogger } from './logger.ts';
import { builtInProviders } from './llm/registry.ts';
import { createServices } from './services.ts';
import { countTextTokens } from './llm/tokens.ts';
import { isLoopbackHost } from './auth/hosts.ts';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));

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

  const services = await createServices({ loaded: { config, settings }, database, logger });
  if (services.authenticator.openMode) {
    logger.warn('open mode: no CALLBOARD_MASTER_KEY is set, so requests without a key act as an ADMIN of tenant "default" (loopback only)');
  }
  const app = createApp(services);
  const server = createServer(app);
  server.listen(config.server.port, config.server.host, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.server.port;
    logger.info({ url: `http://${config.server.host}:${port}/graphql` }, 'Callboard is listening');
    // Building a tokenizer takes about half a second: pay it now rather than on a caller's request.
    setImmediate(() => {
      countTextTokens('', 'gpt-4o');
      countTextTokens('', 'gpt-4');
    });
  });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: finishing in-flight requests');
    const closed = new Promise<void>((done) => server.close(() => done()));
    // Keep-alive sockets go as soon as their request is answered; ones that never go idle are cut after 10 s.
    const sweep = setInterval(() => server.closeIdleConnections(), 50);
    const force = setTimeout(() => server.closeAllConnections(), 10_000).unref();
    server.closeIdleConnections();
    await closed;
    clearInterval(sweep);
    clearTimeout(force);
    await app.dispose();
    // Every history row and cache entry still queued is written before the database closes.
    await services.close();
    await database.close();
    logger.info('stopped');
    logger.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  console.error('Callboard failed to start:', error instanceof Error ? error.message : error);
  process.exit(1);
});
