import { LRUCache } from 'lru-cache';
import { createCallEventHub, type CallEventHub } from './analytics/call-events.ts';
import { startCallRollup, type CallRollupJob } from './analytics/call-rollup.ts';
import { startHistoryPurge, type PurgeJob } from './llm/retention.ts';
import { createAuthenticator, type Authenticator } from './auth/identity.ts';
import { createKeyStore, keyChangedChannel, type KeyStore } from './auth/keys.ts';
import { createLimitStore, type LimitStore } from './auth/limits.ts';
import { charactersOf } from './llm/input-limits.ts';
import { createSpendGuard } from './llm/pipeline/spend.ts';
import type { LoadedConfig } from './config/config.ts';
import type { Database } from './db/database.ts';
import { createResponseCache, type ResponseCache } from './llm/cache.ts';
import { createLlmClient, type LlmClient, type LlmClientDependencies } from './llm/client.ts';
import { createHistoryWriter, type HistoryWriter } from './llm/history.ts';
import { cacheEntryWrittenChannel } from './llm/history-rows.ts';
import { createOverrideStore, type OverrideStore } from './llm/overrides.ts';
import { createProviderRegistry, type ProviderRegistry } from './llm/registry.ts';
import { createTemplateStore } from './llm/templates.ts';
import { countMessageTokens, countTextTokens, type TokenMessage } from './llm/tokens.ts';
import type { Logger } from './logger.ts';
import { createCallMetrics } from './observability/call-metrics.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { registerHistoryMetrics, registerPoolMetrics, registerProcessMetrics } from './observability/runtime-metrics.ts';

/** Everything the API serves from, built once per process. */
export interface Services {
  loaded: LoadedConfig;
  database: Database;
  logger: Logger;
  /** The Prometheus registry every part registers its metrics on (GET /metrics). */
  metrics: Metrics;
  registry: ProviderRegistry;
  overrides: OverrideStore;
  cache: ResponseCache;
  history: HistoryWriter;
  llm: LlmClient;
  keys: KeyStore;
  limits: LimitStore;
  authenticator: Authenticator;
  /** Calls as they are written by any instance on this database, for this instance's subscribers. */
  callEvents: CallEventHub;
  /** Rolls up complete hours of the history for callStats, in the background. */
  rollup: CallRollupJob;
  /** The retention purge ([History] RETENTION_DAYS, PURGE_INTERVAL_SECONDS). */
  purge: PurgeJob;
  /** Tells every instance that a key changed, so none trusts what it remembers of it. */
  announceKeyChange(id: string): Promise<void>;
  /** Drops cache entries (all when null) from the memory of every instance on this database, this one included. */
  forgetCacheEverywhere(keys: readonly string[] | null, invalidation?: CacheInvalidationNotice): Promise<void>;
  /** Writes what is pending and stops background work; the database stays open. `lost` counts the history rows that could not be written. */
  close(): Promise<{ lost: number }>;
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
  /** Aborts every upstream request: the server's forced stop. */
  signal?: AbortSignal;
}

const cacheForgetChannel = 'callboard_cache_forget';
const overridesChangedChannel = 'callboard_overrides_changed';
/** About a millisecond of counting: prompts longer than this are counted on read instead. */
const maxEstimatedCharacters = 20_000;

/** An invalidation of a tenant's entries (null: every tenant's), which answers still in flight must not undo. */
export interface CacheInvalidationNotice {
  tenant: string | null;
}

/** What crosses instances on the cache channel: keys to forget (null: all), and the invalidation, if it was one. */
interface ForgetMessage {
  keys: readonly string[] | null;
  invalidation: CacheInvalidationNotice | null;
}

/** A message of the cache channel; one it cannot read (an older instance's) makes everyone forget everything. */
function readForgetMessage(payload: string): ForgetMessage {
  try {
    const message = JSON.parse(payload) as Partial<ForgetMessage> | null;
    return { keys: Array.isArray(message?.keys) ? message.keys : null, invalidation: message?.invalidation ?? null };
  } catch {
    return { keys: null, invalidation: null };
  }
}

/** The keys of a cacheEntryWrittenChannel message; null when it cannot be read (then what it held is read again from the table). */
function readWrittenKeys(payload: string): string[] | null {
  try {
    const keys = JSON.parse(payload) as unknown;
    return Array.isArray(keys) && keys.every((key) => typeof key === 'string') ? keys : null;
  } catch {
    return null;
  }
}

/** The composition of the LLM layer over a database: registry, overrides, cache, history, client. */
export async function createServices(options: ServicesOptions): Promise<Services> {
  const { loaded, database, logger } = options;
  const { config } = loaded;
  const metrics = createMetrics();
  const registry = createProviderRegistry(config.secrets);
  const overrides = await createOverrideStore({
    prisma: database.prisma,
    query: database.query,
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
  const keys = createKeyStore({ database });
  const limits = createLimitStore({ database });
  // A revoked key stops working on every instance at once; the lookup cache's one second is the fallback.
  const stopKeysListening = await database.listen(
    keyChangedChannel,
    (id) => keys.forget(id),
    () => keys.forget(),
  );
  // One listener per instance, whatever the number of subscribers; their reads go to the dashboards' pool.
  const callEvents = await createCallEventHub({ listen: database.listen, query: database.analyticsQuery, logger, maxSubscriptions: config.limits.maxSubscriptions });
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
      // The writer counts between batches, on the event loop: a long prompt is left for the API to count
      // when a reader asks (estimatedPromptTokens, with a count that yields), never at a caller's expense.
      if (charactersOf(prompt as (string | TokenMessage)[]) > maxEstimatedCharacters) return null;
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
  registerHistoryMetrics(metrics.registry, history);
  registerPoolMetrics(metrics.registry, database);
  registerProcessMetrics(metrics.registry);
  const callMetrics = createCallMetrics({
    registry: metrics.registry,
    maxModels: config.metrics.maxModelLabels,
    maxTenants: config.metrics.maxTenantLabels,
    knownModels: [config.openai.model, config.openai.reasoningModel, config.openai.embeddingModel, ...Object.keys(config.prices)].filter((model): model is string => !!model),
    knownProviders: registry.apiTypes(),
  });
  const cache = createResponseCache({ database, memoryEntries: config.cache.memoryEntries, memoryBytes: Math.round(config.cache.memoryMegabytes * 2 ** 20), writer: history, logger, presence: { database } });
  // Every instance's history announces the entries it writes; then, listening, the keys already there are read.
  const stopEntriesListening = await database.listen(
    cacheEntryWrittenChannel,
    (payload) => {
      const keys = readWrittenKeys(payload);
      if (keys) cache.written(keys);
      else cache.loadKeys();
    },
    () => cache.loadKeys(),
    () => cache.distrustKeys(),
  );
  cache.loadKeys();
  // Each instance keeps hot entries in memory: an invalidation anywhere must reach all of them.
  const stopListening = await database.listen(
    cacheForgetChannel,
    (payload) => {
      const message = readForgetMessage(payload);
      if (message.invalidation) cache.invalidated(message.invalidation.tenant);
      cache.forget(message.keys);
    },
    () => cache.forget(null),
  );
  async function forgetCacheEverywhere(keys: readonly string[] | null, invalidation?: CacheInvalidationNotice): Promise<void> {
    const message: ForgetMessage = { keys, invalidation: invalidation ?? null };
    let payload = JSON.stringify(message);
    // NOTIFY payloads stop at 8000 bytes: past that, everyone forgets everything (it all comes back from the database).
    if (payload.length > 7000) payload = JSON.stringify({ ...message, keys: null });
    // In process first: PGlite's notifications are in process too, and a Postgres one comes back here anyway.
    if (invalidation) cache.invalidated(invalidation.tenant);
    cache.forget(keys);
    await database.notify(cacheForgetChannel, payload);
  }

  const llm = createLlmClient({
    registry,
    overrides,
    cache,
    history,
    templates: createTemplateStore({ promptsDir: config.prompts.dir }),
    prices: config.prices,
    cacheTtlSeconds: config.cache.ttlSeconds,
    storeBodies: config.history.storeBodies,
    sharedAcrossTenants: config.cache.sharedAcrossTenants,
    spend: createSpendGuard({ limits, prices: config.prices, logger }),
    secrets: Object.values(config.secrets).filter((secret): secret is string => secret !== null),
    inputLimits: config.limits,
    onCallFinished: callMetrics.observe,
    sleep: options.sleep,
    random: options.random,
    signal: options.signal,
    // A REFRESH replaced an entry other instances may remember: they forget it once the new row is written.
    entryReplaced: (key) =>
      void history
        .flush()
        .then(() => forgetCacheEverywhere([key]))
        .catch((error: unknown) => logger.warn({ err: error }, 'could not tell other instances of a refreshed cache entry')),
  });
  const rollup = startCallRollup({ database, logger, intervalMs: config.history.rollupIntervalSeconds * 1000 });
  const purge = startHistoryPurge({
    database,
    logger,
    registry: metrics.registry,
    intervalMs: config.history.purgeIntervalSeconds * 1000,
    retentionDays: config.history.retentionDays,
    batchSize: config.history.purgeBatchSize,
  });
  return {
    loaded,
    database,
    logger,
    metrics,
    registry,
    overrides,
    cache,
    history,
    llm,
    keys,
    limits,
    authenticator: createAuthenticator({ masterKey: config.secrets.masterKey, keys }),
    callEvents,
    rollup,
    purge,
    async announceKeyChange(id) {
      keys.forget(id);
      await database.notify(keyChangedChannel, id);
    },
    forgetCacheEverywhere,
    async close() {
      overrides.close();
      await rollup.stop();
      await purge.stop();
      await callEvents.close();
      await stopListening();
      await stopEntriesListening();
      await cache.close();
      await stopOverridesListening();
      await stopKeysListening();
      return history.close();
    },
  };
}
