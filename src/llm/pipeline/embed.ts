import { badUserInput } from '../../errors.ts';
import { cacheKey, type CacheEntryValue, type CacheStatus, type ResponseCache } from '../cache.ts';
import type { AttemptRow, CallRecord } from '../history.ts';
import { checkCallOptions, checkTexts } from '../input-limits.ts';
import { sumUsd, type Usd } from '../../money.ts';
import { costOf } from '../prices.ts';
import type { Provider, ProviderEmbeddingResponse, ProviderUsage } from '../providers/provider.ts';
import { countTextTokensAsync } from '../tokens.ts';
import { boundsOf, untilAborted } from './bounds.ts';
import { cacheModeOf, cacheScopeOf, expiresAt, ownerOf, type CallOptions, type FlowDependencies } from './chat.ts';
import { defaultCaller } from './record.ts';

export interface EmbedInput extends CallOptions {
  texts: readonly string[];
  model?: string | null;
  /** The length of the vectors, for models that can shorten them (text-embedding-3-*). */
  dimensions?: number | null;
}

export interface EmbeddingResult {
  vector: number[];
  model: string;
  cacheStatus: CacheStatus;
}

export interface EmbedResult {
  embeddings: EmbeddingResult[];
  usage: ProviderUsage | null;
  cacheStatus: CacheStatus;
  /** Some text's cache entry could not be read from the database: the provider embedded it. */
  cacheReadFailed: boolean;
  attempts: number;
  latencyMs: number;
  call: CallRecord;
}

interface StoredEmbedding {
  vector: number[];
  model: string;
  dimensions: number;
}

export interface EmbedFlowDependencies extends FlowDependencies {
  cache: Pick<ResponseCache, 'lookup' | 'recordHit' | 'store' | 'singleFlight'>;
}

const maxEmbeddingBatch = 2048;
const maxDimensions = 65_536;

/**
 * The embedding flow: the same steps as chat (limits, cache, retry, record), with the cache per
 * text: a batch asks the provider only for the texts no entry holds, and concurrent calls missing
 * the same texts share one upstream request.
 */
export function createEmbedFlow(dependencies: EmbedFlowDependencies) {
  const { cache, recorder, upstream } = dependencies;
  const { redact } = recorder;

  return async function embed(input: EmbedInput): Promise<EmbedResult> {
    const started = performance.now();
    const settings = dependencies.overrides.settings();
    const apiType = input.apiType ?? settings.apiType;
    const model = input.model ?? settings.embeddingModel;
    const record = recorder.start('EMBEDDING', apiType, model, input);
    try {
      checkCallOptions(input, dependencies.inputLimits);
      const bounds = boundsOf(input, settings, started);
      if (input.texts.length === 0) throw badUserInput('Give at least one text to embed.');
      if (input.texts.length > maxEmbeddingBatch) throw badUserInput(`Give at most ${maxEmbeddingBatch} texts per call.`);
      if (input.texts.some((text) => typeof text !== 'string' || text.length === 0)) throw badUserInput('Texts to embed must be non-empty strings.');
      const dimensions = input.dimensions ?? undefined;
      if (dimensions !== undefined && (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > maxDimensions)) {
        throw badUserInput(`dimensions must be a whole number between 1 and ${maxDimensions}, got ${dimensions}.`, { field: 'dimensions' });
      }
      checkTexts(input.texts, dependencies.inputLimits);
      record.requestBody = redact({ model, input: input.texts, ...(dimensions === undefined ? {} : { dimensions }) });
      const provider: Provider = dependencies.registry.providerFor(apiType, settings);
      const mode = cacheModeOf(input, settings);
      const scope = cacheScopeOf(input, apiType, provider.endpoint.embeddings, dependencies.sharedAcrossTenants);
      const keyOf = (text: string) => cacheKey('EMBEDDING', scope, { model, input: text, dimensions });
      const keys = input.texts.map(keyOf);
      // As for chat: the entry this call read or wrote, none when it bypassed the cache.
      record.cacheKey = keys.length === 1 && mode !== 'BYPASS' ? keys[0]! : null;

      const vectors: (number[] | undefined)[] = new Array(input.texts.length);
      const statuses: CacheStatus[] = new Array(input.texts.length).fill(mode === 'USE' ? 'MISS' : mode);
      let cachedUsage = 0;
      const cachedCosts: (Usd | null)[] = [];
      // Counted once the call succeeds: a batch that fails upstream answered nobody from the cache.
      const hitKeys: string[] = [];
      let cacheReadFailed = false;
      if (mode === 'USE') {
        const lookups = await Promise.all(keys.map((key) => cache.lookup(key)));
        cacheReadFailed = lookups.some((lookup) => lookup.unavailable);
        lookups.forEach(({ entry }, index) => {
          if (!entry) return;
          vectors[index] = (entry.response as StoredEmbedding).vector;
          statuses[index] = 'HIT';
          cachedUsage += entry.usage?.promptTokens ?? 0;
          cachedCosts.push(entry.costUsd);
          hitKeys.push(entry.key);
          // A call of one text links to the entry that served it, as chat hits do.
          if (keys.length === 1) record.servedByCallId = entry.createdByCallId;
        });
      }
      // Sorted, so that concurrent calls missing the same texts share one upstream request.
      const missing = [...new Set(input.texts.filter((_text, index) => vectors[index] === undefined))].sort();
      let attempts: AttemptRow[] = [];
      let fresh: ProviderEmbeddingResponse | null = null;
      const storeEmbeddings = (response: ProviderEmbeddingResponse) => {
        const totalLength = missing.reduce((sum, text) => sum + text.length, 0);
        missing.forEach((text, index) => {
          const vector = response.vectors[index]!;
          // The provider reports usage for the whole batch: each text gets its share by length.
          const share = response.usage ? Math.round((response.usage.promptTokens * text.length) / totalLength) : null;
          const usage = share === null ? null : { promptTokens: share, completionTokens: 0, totalTokens: share };
          const entry: CacheEntryValue = {
            key: keyOf(text),
            kind: 'EMBEDDING',
            apiType,
            model,
            request: redact({ model, input: text, ...(dimensions === undefined ? {} : { dimensions }) }),
            response: { vector, model: response.model, dimensions: vector.length } satisfies StoredEmbedding,
            usage,
            costUsd: costOf(dependencies.prices, model, usage),
            createdAt: new Date(),
            expiresAt: expiresAt(dependencies.cacheTtlSeconds),
            createdByCallId: record.id,
            ...ownerOf(record),
          };
          cache.store(entry);
        });
      };
      const fetchMissing = async (signal: AbortSignal | undefined) => {
        const run = () =>
          upstream.call(settings, bounds, (attemptSignal, timeoutMs) => provider.embed({ model, input: missing, dimensions }, { timeoutMs, signal: attemptSignal }), signal);
        const estimate = async () => {
          let promptTokens = 0;
          for (const text of missing) promptTokens += (await countTextTokensAsync(text, model)).tokens;
          return { model, promptTokens, maxCompletionTokens: 0 };
        };
        const result = dependencies.spend ? await dependencies.spend.run(input.caller ?? defaultCaller, estimate, run, (done) => done.value) : await run();
        result.attempts.at(-1)!.requestId = result.value.requestId;
        if (mode !== 'BYPASS') storeEmbeddings(result.value);
        return result;
      };
      if (missing.length > 0) {
        let sharedFromAnother = false;
        if (mode === 'USE') {
          let leading = false;
          const flight = await untilAborted(
            cache.singleFlight(cacheKey('EMBEDDING', scope, { model, inputs: missing, dimensions }), () => {
              leading = true;
              return fetchMissing(undefined);
            }),
            input.signal,
            bounds,
            () => leading,
          );
          sharedFromAnother = !flight.leader;
          fresh = flight.value.value;
          attempts = sharedFromAnother ? [] : flight.value.attempts;
        } else {
          const result = await fetchMissing(input.signal);
          fresh = result.value;
          attempts = result.attempts;
        }
        const upstreamVectors = fresh.vectors;
        missing.forEach((text, index) => {
          input.texts.forEach((candidate, position) => {
            if (candidate !== text) return;
            vectors[position] = upstreamVectors[index]!;
            // Answered by another caller's request: for this call, as good as the cache.
            if (sharedFromAnother) statuses[position] = 'HIT';
          });
        });
      }
      for (const key of hitKeys) cache.recordHit(key);
      const allHits = statuses.every((status) => status === 'HIT');
      record.cacheStatus = allHits ? 'HIT' : mode === 'USE' ? 'MISS' : mode;
      record.attempts = attempts;
      record.attemptCount = attempts.length;
      const usage = fresh?.usage ?? (allHits ? { promptTokens: cachedUsage, completionTokens: 0, totalTokens: cachedUsage } : null);
      record.promptTokens = usage?.promptTokens ?? null;
      record.completionTokens = usage ? 0 : null;
      record.totalTokens = usage?.totalTokens ?? null;
      // A hit's cost moves to costSavedUsd when the row is finished (record.ts).
      record.costUsd = fresh ? costOf(dependencies.prices, model, usage) : sumUsd(cachedCosts);
      record.responseBody = { model: fresh?.model ?? model, dimensions: vectors[0]?.length ?? null, count: vectors.length };
      recorder.finish(record, started, input.texts);
      const responseModel = fresh?.model ?? model;
      return {
        embeddings: vectors.map((vector, index) => ({ vector: vector!, model: responseModel, cacheStatus: statuses[index]! })),
        usage,
        cacheStatus: record.cacheStatus,
        cacheReadFailed,
        attempts: attempts.length,
        latencyMs: record.latencyMs,
        call: record,
      };
    } catch (error) {
      recorder.finish(record, started, input.texts, error);
      return recorder.fail(error, record);
    }
  };
}
