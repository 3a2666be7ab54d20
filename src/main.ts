import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { createApp } from './app.ts';
import { loadConfig, type ConfigFile } from './config/config.ts';
import { createDatabase } from './db/database.ts';
import { migrate, readMigrations } from './db/migrate.ts';
import { ConfigError } from './errors.ts';
import { createLogger } from './logger.ts';
import { builtInProviders } from './llm/registry.ts';
import { createServices } from './services.ts';
import { countTextTokens } from './llm/tokens.ts';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));

/** The config files in layering order: the project's own, then the working directory's or CALLBOARD_CONFIG's. */
function readConfigFiles(environment: NodeJS.ProcessEnv): ConfigFile[] {
  const projectFile = resolve(repositoryRoot, 'config.ini');
  const userFile = environment.CALLBOARD_CONFIG ? resolve(environment.CALLBOARD_CONFIG) : resolve('config.ini');
  if (environment.CALLBOARD_CONFIG && !existsSync(userFile)) {
    throw new ConfigError([{ source: 'CALLBOARD_CONFIG', section: '', key: 'CALLBOARD_CONFIG', message: `no such file: ${userFile}` }]);
  }
  const paths = [projectFile, ...(userFile === projectFile ? [] : [userFile])].filter((path) => existsSync(path));
  return paths.map((path) => ({ path, text: readFileSync(path, 'utf8') }));
}

async function main(): Promise<void> {
  let loaded;
  try {
    loaded = loadConfig(readConfigFiles(process.env), process.env, { apiTypes: builtInProviders.map((provider) => provider.apiType) });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
  const { config, settings } = loaded;
  const logger = createLogger(config.logging.level);

  const database = await createDatabase({
    url: config.database.url,
    dataDir: resolve(config.database.dataDir),
    analyticsStatementTimeoutMs: config.limits.analyticsStatementTimeoutMs,
  });
  const { applied } = await migrate(database, await readMigrations(resolve(repositoryRoot, 'prisma/migrations')));
  logger.info({ database: database.kind, location: database.location, applied }, 'database ready');

  const services = await createServices({ loaded: { config, settings }, database, logger });
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
