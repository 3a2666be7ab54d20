import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { graphql } from '../gql/index.ts';
import type { ApiCacheAdminCacheEntriesQuery, CacheEntryFilter, CacheEntryOrder, SendMessageInput } from '../gql/graphql.ts';
import { createTestApp, testConfig, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { createDatabase } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices } from '../../src/services.ts';

/** Polls until the condition holds (a notification crosses connections asynchronously); fails after 5 s. */
async function waitUntil(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const apiKey = 'sk-e2e-SECRET-42';

const SendMessageMutation = graphql(`
  mutation ApiCacheAdminSendMessage($input: SendMessageInput!) {
    sendMessage(input: $input) {
      message {
        content
      }
      model
      usage {
        totalTokens
      }
      cacheStatus
      attempts
      call {
        id
        apiType
        model
        cacheStatus
        cacheKey
        attemptCount
        costUsd
        costSavedUsd
        requestBody
      }
    }
  }
`);

const EmbeddingQuery = graphql(`
  query ApiCacheAdminEmbedding($text: String!) {
    embedding(text: $text, cache: USE) {
      cacheStatus
      call {
        cacheKey
      }
    }
  }
`);

const CallCacheEntryQuery = graphql(`
  query ApiCacheAdminCallCacheEntry($id: ID!) {
    call(id: $id) {
      id
      cacheEntry {
        key
        hitCount
        lastHitAt
        createdBy {
          id
        }
        servedCalls {
          totalCount
          edges {
            node {
              id
              cacheStatus
            }
          }
        }
      }
    }
  }
`);

const CacheEntryQuery = graphql(`
  query ApiCacheAdminCacheEntry($key: String!) {
    cacheEntry(key: $key) {
      key
      keyVersion
      kind
      apiType
      model
      request
      response
      usage {
        promptTokens
        completionTokens
        totalTokens
      }
      costUsd
      hitCount
      createdAt
      lastHitAt
      expiresAt
      createdBy {
        id
        cacheStatus
      }
      servedCalls(first: 10) {
        totalCount
        edges {
          node {
            id
            cacheStatus
          }
        }
      }
    }
  }
`);

const CacheEntriesQuery = graphql(`
  query ApiCacheAdminCacheEntries($first: Int, $after: String, $filter: CacheEntryFilter, $orderBy: CacheEntryOrder) {
    cacheEntries(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
      totalCount
      edges {
        node {
          key
          kind
          model
          hitCount
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const InvalidateCacheMutation = graphql(`
  mutation ApiCacheAdminInvalidateCache($filter: CacheEntryFilter, $dryRun: Boolean) {
    invalidateCache(filter: $filter, dryRun: $dryRun) {
      matched
      deleted
      dryRun
    }
  }
`);

const ProvidersQuery = graphql(`
  query ApiCacheAdminProviders {
    providers {
      apiType
      description
      active
      configured
      missing
    }
  }
`);

const OverridesQuery = graphql(`
  query ApiCacheAdminOverrides {
    overrides {
      key
      value
      updatedAt
      updatedBy
    }
  }
`);

const OverrideChangesQuery = graphql(`
  query ApiCacheAdminOverrideChanges($key: String, $first: Int) {
    overrideChanges(key: $key, first: $first) {
      id
      key
      oldValue
      newValue
      changedBy
      changedAt
    }
  }
`);

const ForceApiTypeMutation = graphql(`
  mutation ApiCacheAdminForceApiType($apiType: String!) {
    forceApiType(apiType: $apiType) {
      key
      value
      updatedAt
      updatedBy
    }
  }
`);

const ForceApiCacheMutation = graphql(`
  mutation ApiCacheAdminForceApiCache($enabled: Boolean!, $fileName: String) {
    forceApiCache(enabled: $enabled, fileName: $fileName) {
      key
      value
      updatedBy
    }
  }
`);

const ForceDefaultValueMutation = graphql(`
  mutation ApiCacheAdminForceDefaultValue($key: String!, $value: String!) {
    forceDefaultValue(key: $key, value: $value) {
      key
      value
      updatedBy
    }
  }
`);

const ResetOverridesMutation = graphql(`
  mutation ApiCacheAdminResetOverrides($key: String) {
    resetOverrides(key: $key) {
      key
      oldValue
      newValue
      changedBy
    }
  }
`);

const SettingsQuery = graphql(`
  query ApiCacheAdminSettings {
    settings {
      section
      key
      value
      source
      origin
      secret
    }
  }
`);

function dataOf<T>(result: GraphQLResponse<T>): T {
  expect(result.errors).toBeUndefined();
  return result.data!;
}

const question = (content: string, more: Partial<SendMessageInput> = {}): SendMessageInput => ({ messages: [{ role: 'USER', content }], ...more });

describe.each(databaseKinds)('the cache and the admin levers through the API on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n[Prices]\ngpt-4o-mini=0.15, 0.60\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: apiKey }));
  });
  afterAll(async () => {
    await testApp?.dispose();
    await fake?.close();
  });
  beforeEach(() => fake.reset());
  afterEach(() => testApp.services.overrides.reset(null, 'test cleanup'));

  async function send(input: SendMessageInput, headers?: Record<string, string>) {
    return dataOf(await testApp.execute(SendMessageMutation, { input }, headers)).sendMessage;
  }

  async function entry(key: string) {
    return dataOf(await testApp.execute(CacheEntryQuery, { key })).cacheEntry;
  }

  async function entryKeys(filter: CacheEntryFilter, orderBy?: CacheEntryOrder) {
    const result = dataOf(await testApp.execute(CacheEntriesQuery, { first: 100, filter, orderBy })).cacheEntries;
    expect(result.totalCount).toBe(result.edges.length);
    return result.edges.map((edge) => edge.node.key);
  }

  describe('the cache', () => {
    it('answers a HIT after a MISS without a second upstream call, and counts it on the entry', async () => {
      const miss = await send(question('What is a cache?', { cache: 'USE' }));
      const hit = await send(question('What is a cache?', { cache: 'USE', tags: ['second'] }));

      expect(fake.requestsTo('chat')).toHaveLength(1);
      expect(miss).toMatchObject({ cacheStatus: 'MISS', attempts: 1, call: { cacheStatus: 'MISS', attemptCount: 1 } });
      expect(hit).toMatchObject({
        message: miss.message,
        model: miss.model,
        usage: miss.usage,
        cacheStatus: 'HIT',
        attempts: 0,
        call: { cacheStatus: 'HIT', attemptCount: 0, cacheKey: miss.call.cacheKey, costUsd: '0', costSavedUsd: miss.call.costUsd },
      });
      expect(miss.call.cacheKey).toMatch(/^[0-9a-f]{64}$/);

      await testApp.services.history.flush();
      const seen = dataOf(await testApp.execute(CallCacheEntryQuery, { id: hit.call.id })).call!;
      expect(seen.cacheEntry).toMatchObject({
        key: miss.call.cacheKey,
        hitCount: 1,
        createdBy: { id: miss.call.id },
        servedCalls: { totalCount: 1, edges: [{ node: { id: hit.call.id, cacheStatus: 'HIT' } }] },
      });
      expect(seen.cacheEntry!.lastHitAt).not.toBeNull();

      const stored = await entry(miss.call.cacheKey!);
      expect(stored).toMatchObject({
        key: miss.call.cacheKey,
        keyVersion: 2,
        kind: 'CHAT',
        apiType: 'openai',
        model: 'gpt-4o-mini',
        request: miss.call.requestBody,
        response: { message: { content: 'echo: What is a cache?' } },
        usage: { totalTokens: miss.usage!.totalTokens },
        costUsd: miss.call.costUsd,
        hitCount: 1,
        expiresAt: null,
        createdBy: { id: miss.call.id, cacheStatus: 'MISS' },
        servedCalls: { totalCount: 1, edges: [{ node: { id: hit.call.id } }] },
      });
      expect(JSON.stringify(stored)).not.toContain(apiKey);
    });

    it('REFRESH calls upstream again and replaces the entry, which starts counting hits afresh', async () => {
      const miss = await send(question('Refresh me', { cache: 'USE' }));
      await send(question('Refresh me', { cache: 'USE' }));
      await testApp.services.history.flush();
      expect((await entry(miss.call.cacheKey!))!.hitCount).toBe(1);

      const refresh = await send(question('Refresh me', { cache: 'REFRESH' }));
      expect(refresh).toMatchObject({ cacheStatus: 'REFRESH', attempts: 1, call: { cacheKey: miss.call.cacheKey } });
      expect(fake.requestsTo('chat')).toHaveLength(2);
      await testApp.services.history.flush();
      expect(await entry(miss.call.cacheKey!)).toMatchObject({ hitCount: 0, createdBy: { id: refresh.call.id } });
    });

    it('lists cache entries filtered, sorted and paged, and finds one by key', async () => {
      const alpha = await send(question('Alpha says "hello"', { cache: 'USE', model: 'gpt-4.1-nano' }));
      const beta = await send(question('Beta', { cache: 'USE', model: 'gpt-4.1-nano', temperature: 0 }));
      const gamma = dataOf(await testApp.execute(EmbeddingQuery, { text: 'Gamma text' })).embedding;
      await send(question('Beta', { cache: 'USE', model: 'gpt-4.1-nano', temperature: 0 }));
      await send(question('Beta', { cache: 'USE', model: 'gpt-4.1-nano', temperature: 0 }));
      await send(question('Alpha says "hello"', { cache: 'USE', model: 'gpt-4.1-nano' }));
      await testApp.services.history.flush();
      const keys = [alpha.call.cacheKey!, beta.call.cacheKey!, gamma.call.cacheKey!];

      const byHits = { field: 'HIT_COUNT', direction: 'DESC' } as const;
      expect(await entryKeys({ keys }, byHits)).toEqual([beta.call.cacheKey, alpha.call.cacheKey, gamma.call.cacheKey]);
      expect(await entryKeys({ keys }, { field: 'HIT_COUNT', direction: 'ASC' })).toEqual([gamma.call.cacheKey, alpha.call.cacheKey, beta.call.cacheKey]);
      const paged: string[] = [];
      let after: string | null = null;
      do {
        const result: GraphQLResponse<ApiCacheAdminCacheEntriesQuery> = await testApp.execute(CacheEntriesQuery, { first: 1, after, filter: { keys }, orderBy: byHits });
        const page = dataOf(result).cacheEntries;
        expect(page.totalCount).toBe(3);
        paged.push(...page.edges.map((edge) => edge.node.key));
        after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
      } while (after !== null);
      expect(paged).toEqual([beta.call.cacheKey, alpha.call.cacheKey, gamma.call.cacheKey]);

      expect(await entryKeys({ keys, kinds: ['EMBEDDING'] })).toEqual([gamma.call.cacheKey]);
      expect((await entryKeys({ models: ['gpt-4.1-nano'] })).sort()).toEqual([alpha.call.cacheKey, beta.call.cacheKey].sort());
      expect(await entryKeys({ text: 'alpha says "HELLO"' })).toEqual([alpha.call.cacheKey]);
      expect(await entryKeys({ text: 'gamma' })).toEqual([gamma.call.cacheKey]);
      expect(await entryKeys({ keys, minHitCount: 2 })).toEqual([beta.call.cacheKey]);
      expect((await entryKeys({ keys, expired: false })).sort()).toEqual([...keys].sort());
      expect(await entryKeys({ keys, expired: true })).toEqual([]);

      expect(await entry(gamma.call.cacheKey!)).toMatchObject({ kind: 'EMBEDDING', model: 'text-embedding-3-small', request: { input: 'Gamma text' }, hitCount: 0 });
      expect(await entry('0'.repeat(64))).toBeNull();
    });

    it('invalidateCache counts on a dry run, deletes otherwise, and the next call is a MISS', async () => {
      const filter = { models: ['gpt-4.1-mini'] };
      const first = await send(question('Invalidate me', { cache: 'USE', model: 'gpt-4.1-mini' }));
      await testApp.services.history.flush();

      const dryRun = dataOf(await testApp.execute(InvalidateCacheMutation, { filter, dryRun: true })).invalidateCache;
      expect(dryRun).toEqual({ matched: 1, deleted: 0, dryRun: true });
      expect(await entry(first.call.cacheKey!)).not.toBeNull();
      expect((await send(question('Invalidate me', { cache: 'USE', model: 'gpt-4.1-mini' }))).cacheStatus).toBe('HIT');
      expect(fake.requestsTo('chat')).toHaveLength(1);

      const deleted = dataOf(await testApp.execute(InvalidateCacheMutation, { filter })).invalidateCache;
      expect(deleted).toEqual({ matched: 1, deleted: 1, dryRun: false });
      expect(await entry(first.call.cacheKey!)).toBeNull();
      expect(dataOf(await testApp.execute(CallCacheEntryQuery, { id: first.call.id })).call!.cacheEntry).toBeNull();

      const again = await send(question('Invalidate me', { cache: 'USE', model: 'gpt-4.1-mini' }));
      expect(again).toMatchObject({ cacheStatus: 'MISS', attempts: 1 });
      expect(fake.requestsTo('chat')).toHaveLength(2);
    });

    it('invalidateCache right after a call deletes its entry for good, though the history had not written it yet', async () => {
      const filter = { models: ['gpt-4.1-mini'] };
      const fresh = await send(question('Just made', { cache: 'USE', model: 'gpt-4.1-mini' }));
      const result = dataOf(await testApp.execute(InvalidateCacheMutation, { filter })).invalidateCache;
      expect(result.deleted).toBeGreaterThanOrEqual(1);
      await testApp.services.history.flush();

      expect(await entry(fresh.call.cacheKey!)).toBeNull();
      expect((await send(question('Just made', { cache: 'USE', model: 'gpt-4.1-mini' }))).cacheStatus).toBe('MISS');
      expect(fake.requestsTo('chat')).toHaveLength(2);
    });

    it('invalidateCache without a filter empties the cache, memory included', async () => {
      const before = await send(question('Everything goes', { cache: 'USE' }));
      await testApp.services.history.flush();
      const total = dataOf(await testApp.execute(CacheEntriesQuery, { first: 0 })).cacheEntries.totalCount;
      expect(total).toBeGreaterThan(0);

      expect(dataOf(await testApp.execute(InvalidateCacheMutation, {})).invalidateCache).toEqual({ matched: total, deleted: total, dryRun: false });
      expect(dataOf(await testApp.execute(CacheEntriesQuery, { first: 0 })).cacheEntries.totalCount).toBe(0);
      const after = await send(question('Everything goes', { cache: 'USE' }));
      expect(after.cacheStatus).toBe('MISS');
      expect(after.call.cacheKey).toBe(before.call.cacheKey);
    });
  });

  describe('several instances on one database', () => {
    it("invalidateCache on one instance drops the entry from another instance's memory", async () => {
      const { url } = testApp.testDatabase;
      // A second instance: on Postgres with its own connections, as another process would have.
      const otherDatabase = url ? await createDatabase({ url, dataDir: 'unused', poolSize: 2 }) : testApp.testDatabase.database;
      const other = await createServices({ loaded: testApp.services.loaded, database: otherDatabase, logger: createLogger('silent') });
      try {
        const ask = () => other.llm.sendMessage({ messages: [{ role: 'user', content: 'Shared between instances' }], cache: 'USE' });
        expect((await ask()).cacheStatus).toBe('MISS');
        await other.history.flush();
        expect((await ask()).cacheStatus).toBe('HIT');

        const result = dataOf(await testApp.execute(InvalidateCacheMutation, { filter: { text: 'Shared between instances' } })).invalidateCache;
        expect(result.deleted).toBe(1);
        await waitUntil(() => other.cache.size() === 0);

        expect((await ask()).cacheStatus).toBe('MISS');
        expect(fake.requestsTo('chat')).toHaveLength(2);
      } finally {
        await other.close();
        if (url) await otherDatabase.close();
      }
    });
  });

  describe('several instances on one database, overrides', () => {
    it('an override set through one instance is in force on another at once, without polling', async () => {
      const { url } = testApp.testDatabase;
      const otherDatabase = url ? await createDatabase({ url, dataDir: 'unused', poolSize: 2 }) : testApp.testDatabase.database;
      const other = await createServices({ loaded: testApp.services.loaded, database: otherDatabase, logger: createLogger('silent'), overridesRefreshMs: 0 });
      try {
        expect(other.overrides.settings().model).toBe('gpt-4o-mini');
        const forced = await testApp.execute(ForceDefaultValueMutation, { key: 'MODEL', value: 'gpt-4.1-nano' });
        expect(forced.errors).toBeUndefined();
        await waitUntil(() => other.overrides.settings().model === 'gpt-4.1-nano');

        await other.overrides.reset('MODEL', 'the other instance');
        await waitUntil(() => testApp.services.overrides.settings().model === 'gpt-4o-mini');
      } finally {
        await other.close();
        if (url) await otherDatabase.close();
      }
    });
  });

  describe('providers, overrides and settings', () => {
    it('lists the providers, the active one and what the others miss', async () => {
      const providers = dataOf(await testApp.execute(ProvidersQuery)).providers;
      expect(providers.map(({ description: _description, ...provider }) => provider)).toEqual([
        { apiType: 'openai', active: true, configured: true, missing: [] },
        { apiType: 'azure', active: false, configured: false, missing: ['AZURE_OPENAI_ENDPOINT', 'AZURE_OPENAI_KEY'] },
        { apiType: 'openai-compatible', active: false, configured: true, missing: [] },
      ]);
      for (const provider of providers) expect(provider.description).not.toBe('');
    });

    it('forceApiType switches the provider of calls that name none, for whoever set it', async () => {
      const forced = dataOf(await testApp.execute(ForceApiTypeMutation, { apiType: 'openai-compatible' }, { 'x-callboard-actor': 'alice' })).forceApiType;
      expect(forced).toMatchObject({ key: 'API_TYPE', value: 'openai-compatible', updatedBy: 'open mode (note: alice)' });
      expect(Date.parse(forced.updatedAt)).not.toBeNaN();

      const providers = dataOf(await testApp.execute(ProvidersQuery)).providers;
      expect(providers.filter((provider) => provider.active).map((provider) => provider.apiType)).toEqual(['openai-compatible']);
      expect((await send(question('Which provider?'))).call.apiType).toBe('openai-compatible');
      expect((await send(question('Named provider', { apiType: 'openai' }))).call.apiType).toBe('openai');

      const apiType = dataOf(await testApp.execute(SettingsQuery)).settings.find((setting) => setting.key === 'API_TYPE');
      expect(apiType).toMatchObject({ section: 'OpenAI', value: 'openai-compatible', source: 'OVERRIDE', origin: 'open mode (note: alice)' });
    });

    it('forceApiCache turns the cache on and off for calls that do not say', async () => {
      const on = dataOf(await testApp.execute(ForceApiCacheMutation, { enabled: true, fileName: 'my_cache.pickle' })).forceApiCache;
      expect(on.map(({ key, value }) => [key, value]).sort()).toEqual([
        ['CACHE_API_CALLS', 'True'],
        ['CACHE_FILE_NAME', 'my_cache.pickle'],
      ]);
      expect(on.every((override) => override.updatedBy === 'open mode')).toBe(true);
      expect((await send(question('Cache me by default'))).cacheStatus).toBe('MISS');
      expect((await send(question('Cache me by default'))).cacheStatus).toBe('HIT');
      expect(fake.requestsTo('chat')).toHaveLength(1);

      const off = dataOf(await testApp.execute(ForceApiCacheMutation, { enabled: false })).forceApiCache;
      expect(off.find((override) => override.key === 'CACHE_API_CALLS')!.value).toBe('False');
      expect((await send(question('Cache me by default'))).cacheStatus).toBe('BYPASS');
      expect(fake.requestsTo('chat')).toHaveLength(2);
    });

    it('forceDefaultValue changes what goes upstream, shows in settings, overrides and their audit, until reset', async () => {
      const ops = { 'x-callboard-actor': 'ops@example.com' };
      const model = dataOf(await testApp.execute(ForceDefaultValueMutation, { key: 'MODEL', value: 'gpt-4o' }, ops)).forceDefaultValue;
      expect(model).toEqual({ key: 'MODEL', value: 'gpt-4o', updatedBy: 'open mode (note: ops@example.com)' });

      const answered = await send(question('Which model?'));
      expect(fake.requestsTo('chat').at(-1)!.body.model).toBe('gpt-4o');
      expect(answered).toMatchObject({ model: 'gpt-4o', call: { model: 'gpt-4o' } });
      const settings = dataOf(await testApp.execute(SettingsQuery)).settings;
      expect(settings.find((setting) => setting.key === 'MODEL')).toEqual({
        section: 'OpenAI',
        key: 'MODEL',
        value: 'gpt-4o',
        source: 'OVERRIDE',
        origin: 'open mode (note: ops@example.com)',
        secret: false,
      });

      // Keys are case-insensitive, as in config.ini.
      await testApp.execute(ForceDefaultValueMutation, { key: 'temperature', value: '0.5' }, { 'x-callboard-actor': 'bob' });
      await send(question('Cooler'));
      expect(fake.requestsTo('chat').at(-1)!.body.temperature).toBe(0.5);
      await testApp.execute(ForceDefaultValueMutation, { key: 'MODEL', value: 'gpt-4.1' }, ops);

      const overrides = dataOf(await testApp.execute(OverridesQuery)).overrides;
      expect(overrides.map(({ key, value, updatedBy }) => ({ key, value, updatedBy }))).toEqual([
        { key: 'MODEL', value: 'gpt-4.1', updatedBy: 'open mode (note: ops@example.com)' },
        { key: 'TEMPERATURE', value: '0.5', updatedBy: 'open mode (note: bob)' },
      ]);
      const changes = dataOf(await testApp.execute(OverrideChangesQuery, { key: 'MODEL' })).overrideChanges;
      expect(changes.slice(0, 2).map(({ oldValue, newValue, changedBy }) => ({ oldValue, newValue, changedBy }))).toEqual([
        { oldValue: 'gpt-4o', newValue: 'gpt-4.1', changedBy: 'open mode (note: ops@example.com)' },
        { oldValue: null, newValue: 'gpt-4o', changedBy: 'open mode (note: ops@example.com)' },
      ]);
      const newest = dataOf(await testApp.execute(OverrideChangesQuery, { first: 1 })).overrideChanges;
      expect(newest).toHaveLength(1);
      expect(newest[0]).toMatchObject({ key: 'MODEL', newValue: 'gpt-4.1' });

      const reset = dataOf(await testApp.execute(ResetOverridesMutation, { key: 'MODEL' }, { 'x-callboard-actor': 'carol' })).resetOverrides;
      expect(reset).toEqual([{ key: 'MODEL', oldValue: 'gpt-4.1', newValue: null, changedBy: 'open mode (note: carol)' }]);
      const restored = dataOf(await testApp.execute(SettingsQuery)).settings.find((setting) => setting.key === 'MODEL');
      expect(restored).toMatchObject({ value: 'gpt-4o-mini', source: 'FILE', origin: 'test.ini' });
      await send(question('Back to the file'));
      expect(fake.requestsTo('chat').at(-1)!.body.model).toBe('gpt-4o-mini');

      const all = dataOf(await testApp.execute(ResetOverridesMutation, {})).resetOverrides;
      expect(all).toEqual([{ key: 'TEMPERATURE', oldValue: '0.5', newValue: null, changedBy: 'open mode' }]);
      expect(dataOf(await testApp.execute(OverridesQuery)).overrides).toEqual([]);
      expect(dataOf(await testApp.execute(ResetOverridesMutation, {})).resetOverrides).toEqual([]);
      const unknown = await testApp.execute(ResetOverridesMutation, { key: 'MODLE' });
      expect(unknown.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
      expect(unknown.errors?.[0]?.message).toContain('unknown key "MODLE"');
    });

    it('settings show every section with its source, and secrets only as set', async () => {
      const settings = dataOf(await testApp.execute(SettingsQuery)).settings;
      const find = (key: string) => settings.find((setting) => setting.key === key);
      expect(find('BASE_URL')).toMatchObject({ section: 'OpenAI', value: fake.openaiBaseURL, source: 'FILE', origin: 'test.ini' });
      expect(find('MAX_ATTEMPTS')).toMatchObject({ value: '5', source: 'DEFAULT', origin: null });
      expect(find('OPENAI_API_KEY')).toEqual({ section: 'Secrets', key: 'OPENAI_API_KEY', value: 'set', source: 'ENVIRONMENT', origin: 'OPENAI_API_KEY', secret: true });
      expect(new Set(settings.map((setting) => setting.section))).toEqual(new Set(['OpenAI', 'Server', 'Database', 'Logging', 'Cache', 'History', 'Metrics', 'Prompts', 'Limits', 'Prices', 'Secrets']));
      expect(JSON.stringify(settings)).not.toContain(apiKey);
    });
  });
});
