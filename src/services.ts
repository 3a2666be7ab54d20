import { LRUCache } from 'lru-cache';
import type { LoadedConfig } from './config/config.ts';
import type { Database } from './db/database.ts';
import { createResponseCache, type ResponseCache } from './llm/cache.ts';
import { createLlmClient, type LlmClient, type LlmClientDependencies } from './llm/client.ts';
import { createHistoryWriter, type HistoryWriter } from './llm/history.ts';
import { createOverrideStore, type OverrideStore } from './llm/overrides.ts';
import { createProviderRegistry, type ProviderRegistry } from './llm/registry.ts';
import { createTemplateStore } from './llm/templates.ts';
import { countMessageTokens, countTextTokens, type TokenMessage } from './llm/tokens.ts';
import type { Logger } from './logger.ts';

/** Everything the API serves from, built once per process. */
export interface Services {
  loaded: LoadedConfig;
  database: Database;
  logger: Logger;
  registry: ProviderRegistry;
  overrides: OverrideStore;
  cache: ResponseCache;
  history: HistoryWriter;
  llm: LlmClient;
  /** Drops cache entries (all when null) from the memory of every instance on this database, this one included. */
  forgetCacheEverywhere(keys: readonly string[] | null): Promise<void>;
  /** Writes what is pending and stops background work; the database stays open. */
  close(): Promise<void>;
}

export interface ServicesOptions {
  loaded: LoadedConfig;
  database: Database;
  logger: Logger;
  /** How often runtime overrides are read again in case a change announcement was missed. @default 30000 */
  overridesRefreshMs?: number;
  /** Injected by tests on a fake clock. */
  sleep?: LlmClientDependencies['sleep'];
  random?: LlmClientDependencies['random'];
}

const cacheForgetChannel = 'callboard_cache_forget';
const overridesChangedChannel = 'callboard_overrides_changed';

/** The composition of the LLM layer over a database: registry, overrides, cache, history, client. */
export async function createServices(options: ServicesOptions): Promise<Services> {
  const { loaded, database, logger } = options;
  const { config } = loaded;
  const registry = createProviderRegistry(config.secrets);
  const overrides = await createOverrideStore({
    prisma: database.prisma,
    base: config.openai,
    validate: (field, value) =>
      field === 'apiType' && !registry.has(value as string) ? `unknown API type "${String(value)}"; registered: ${registry.apiTypes().join(', ')}` : null,
    announce: () => database.notify(overridesChangedChannel, ''),
    refreshIntervalMs: options.overridesRefreshMs,
    logger,
  });
  // Every instance applies an override as soon as any instance changes it.
  const stopOverridesListening = await database.listen(
    overridesChangedChannel,
    () => void overrides.refresh().catch((error: unknown) => logger.warn({ err: error }, 'could not reload runtime overrides')),
    () => void overrides.refresh().catch(() => {}),
  );
  const cache = createResponseCache({ database, memoryEntries: config.cache.memoryEntries, logger });
  // Each instance keeps hot entries in memory: an invalidation anywhere must reach all of them.
  const stopListening = await database.listen(
    cacheForgetChannel,
    (payload) => cache.forget(payload === '*' ? null : payload.split(',')),
    () => cache.forget(null),
  );
  const estimates = new LRUCache<string, number>({ max: 10_000 });
  const history = createHistoryWriter({
    database,
    logger,
    batchSize: config.history.batchSize,
    flushIntervalMs: config.history.flushIntervalMs,
    maxPendingRows: config.history.maxPendingRows,
    spoolDir: config.history.spoolDir,
    estimatePromptTokens: (call, prompt) => {
      if (!Array.isArray(prompt)) return null;
      // Calls that share a cache key share a prompt: count it once.
      const known = call.cacheKey === null ? undefined : estimates.get(call.cacheKey);
      if (known !== undefined) return known;
      const tokens =
        call.kind === 'CHAT'
          ? countMessageTokens(prompt as TokenMessage[], call.model).tokens
          : (prompt as string[]).reduce((sum, text) => sum + countTextTokens(text, call.model).tokens, 0);
      if (call.cacheKey !== null) estimates.set(call.cacheKey, tokens);
      return tokens;
    },
  });
  const llm = createLlmClient({
    registry,
    overrides,
    cache,
    history,
    templates: createTemplateStore({ promptsDir: config.prompts.dir }),
    prices: config.prices,
    cacheTtlSeconds: config.cache.ttlSeconds,
    storeBodies: config.history.storeBodies,
    secrets: Object.values(config.secrets).filter((secret): secret is string => secret !== null),
    sleep: options.sleep,
    random: options.random,
  });
  return {
    loaded,
    database,
    logger,
    registry,
    overrides,
    cache,
    history,
    llm,
    async forgetCacheEverywhere(keys) {
      cache.forget(keys);
      const payload = keys === null ? '*' : keys.join(',');
      // NOTIFY payloads stop at 8000 bytes: past that, everyone forgets everything (it all comes back from the database).
      await database.notify(cacheForgetChannel, payload.length > 7000 ? '*' : payload);
    },
    async close() {
      overrides.close();
      await stopListening();
      await stopOverridesListening();
      await history.close();
    },
  };
}
