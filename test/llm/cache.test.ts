import { afterEach, describe, expect, it, vi } from 'vitest';
import { cacheKey } from '../../src/llm/cache.ts';
import type { ChatMessage } from '../../src/llm/client.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion, embeddingsResponse, embeddingVector } from '../support/fake-openai.ts';
import { failure, historyRow, useLlmHarness, user } from './harness.ts';

describe('cacheKey', () => {
  const openai = { apiType: 'openai', endpoint: 'https://api.openai.com/v1', tenant: 'default' };
  const request = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], temperature: 1.5, max_tokens: 4000 };

  it('does not depend on the order of keys', () => {
    const reordered = { max_tokens: 4000, temperature: 1.5, messages: [{ content: 'hi', role: 'user' }], model: 'gpt-4o-mini' };

    expect(cacheKey('CHAT', openai, reordered)).toBe(cacheKey('CHAT', openai, request));
  });

  it('changes with messages, model, temperature, response format, API type, provider endpoint, tenant and kind', () => {
    const keys = [
      cacheKey('CHAT', openai, request),
      cacheKey('CHAT', openai, { ...request, messages: [{ role: 'user', content: 'hi!' }] }),
      cacheKey('CHAT', openai, { ...request, messages: [{ role: 'system', content: 'hi' }] }),
      cacheKey('CHAT', openai, { ...request, model: 'gpt-4o' }),
      cacheKey('CHAT', openai, { ...request, temperature: 1 }),
      cacheKey('CHAT', openai, { ...request, response_format: { type: 'json_object' } }),
      cacheKey('CHAT', { ...openai, apiType: 'azure' }, request),
      cacheKey('CHAT', { ...openai, endpoint: 'http://127.0.0.1:11434/v1' }, request),
      cacheKey('CHAT', { ...openai, tenant: 'team-b' }, request),
      cacheKey('CHAT', { ...openai, tenant: null }, request),
      cacheKey('EMBEDDING', openai, request),
    ];

    expect(new Set(keys).size).toBe(keys.length);
    for (const key of keys) expect(key).toMatch(/^[0-9a-f]{64}$/);
  });
});

const vectorOf = (text: string) => embeddingVector(text, 8);

describe.each(databaseKinds)('the cache on %s', (kind) => {
  const harness = useLlmHarness(kind);

  describe('chat responses', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('USE: a miss, then a hit that makes no upstream request', async () => {
      const { llm } = await harness.start();

      const miss = await llm.sendMessage({ messages: user('cache me'), cache: 'USE' });
      const hit = await llm.sendMessage({ messages: user('cache me'), cache: 'USE' });

      expect(miss.cacheStatus).toBe('MISS');
      expect(hit.cacheStatus).toBe('HIT');
      expect(hit.message).toEqual(miss.message);
      expect(hit.attempts).toBe(0);
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      const missRow = await historyRow(harness, miss.call.id);
      const hitRow = await historyRow(harness, hit.call.id);
      expect(missRow).toMatchObject({ cacheStatus: 'MISS', attemptCount: 1 });
      expect(hitRow).toMatchObject({ cacheStatus: 'HIT', attemptCount: 0, cacheKey: missRow.cacheKey });
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: missRow.cacheKey! } });
      expect(entry).toMatchObject({ kind: 'CHAT', apiType: 'openai', model: 'gpt-4o-mini', hitCount: 1, createdByCallId: miss.call.id });
      expect(entry.lastHitAt).toBeInstanceOf(Date);
    });

    it('keeps in memory what [Cache] MEMORY_MB allows, least recently used first out, and an entry larger than it only in the database', async () => {
      const { llm, cache } = await harness.start({ ini: '[Cache]\nMEMORY_MB=0.4\n' });
      const keyOf = async (call: { id: string }) => (await historyRow(harness, call.id)).cacheKey!;
      // About 180 KB each (the prompt, and the answer echoes it twice): two fit in 0.4 MB, three do not.
      const prompts = ['a', 'b', 'c'].map((letter) => `${letter} `.repeat(30_000));
      const keys: string[] = [];
      for (const prompt of prompts) keys.push(await keyOf((await llm.sendMessage({ messages: user(prompt), cache: 'USE' })).call));

      expect(cache.peek(keys[0]!)).toBeUndefined();
      expect(cache.peek(keys[1]!)).toBeDefined();
      expect(cache.peek(keys[2]!)).toBeDefined();
      // Out of memory is not out of the cache: the database still answers.
      expect((await llm.sendMessage({ messages: user(prompts[0]!), cache: 'USE' })).cacheStatus).toBe('HIT');

      const huge = 'd '.repeat(300_000);
      const stored = await llm.sendMessage({ messages: user(huge), cache: 'USE' });
      expect(cache.peek(await keyOf(stored.call))).toBeUndefined();
      expect((await llm.sendMessage({ messages: user(huge), cache: 'USE' })).cacheStatus).toBe('HIT');
      expect(harness.fake.requestsTo('chat')).toHaveLength(4);
    });

    it('REFRESH calls upstream and overwrites the entry', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [
        { json: chatCompletion({ content: 'old answer', model: 'gpt-4o-mini' }) },
        { json: chatCompletion({ content: 'new answer', model: 'gpt-4o-mini' }) },
      ]);

      const first = await llm.sendMessage({ messages: user('refresh me'), cache: 'USE' });
      const refreshed = await llm.sendMessage({ messages: user('refresh me'), cache: 'REFRESH' });
      const hit = await llm.sendMessage({ messages: user('refresh me'), cache: 'USE' });

      expect([first.message.content, refreshed.message.content, hit.message.content]).toEqual(['old answer', 'new answer', 'new answer']);
      expect([first.cacheStatus, refreshed.cacheStatus, hit.cacheStatus]).toEqual(['MISS', 'REFRESH', 'HIT']);
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
      const row = await historyRow(harness, refreshed.call.id);
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: row.cacheKey! } });
      expect(entry).toMatchObject({ createdByCallId: refreshed.call.id, hitCount: 1 });
      expect(JSON.stringify(entry.response)).toContain('new answer');
    });

    it('BYPASS neither reads nor writes the cache', async () => {
      const { llm } = await harness.start();

      const stored = await llm.sendMessage({ messages: user('bypass me'), cache: 'USE' });
      const bypassed = await llm.sendMessage({ messages: user('bypass me'), cache: 'BYPASS' });
      const neverStored = await llm.sendMessage({ messages: user('never stored'), cache: 'BYPASS' });

      expect(bypassed.cacheStatus).toBe('BYPASS');
      expect(harness.fake.requestsTo('chat')).toHaveLength(3);
      const row = await historyRow(harness, bypassed.call.id);
      expect(row.cacheKey).toBeNull();
      const entries = await harness.prisma.cacheEntry.findMany({ where: { createdByCallId: { in: [stored.call.id, bypassed.call.id, neverStored.call.id] } } });
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ createdByCallId: stored.call.id, hitCount: 0, lastHitAt: null });
    });

    it('bypasses by default, as CACHE_API_CALLS=False says', async () => {
      const { llm } = await harness.start();

      const first = await llm.sendMessage({ messages: user('default mode') });
      const second = await llm.sendMessage({ messages: user('default mode') });

      expect([first.cacheStatus, second.cacheStatus]).toEqual(['BYPASS', 'BYPASS']);
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
    });

    it('uses the cache by default when CACHE_API_CALLS=True', async () => {
      const { llm } = await harness.start({ openai: { CACHE_API_CALLS: 'True' } });

      const first = await llm.sendMessage({ messages: user('configured mode') });
      const second = await llm.sendMessage({ messages: user('configured mode') });
      const bypassed = await llm.sendMessage({ messages: user('configured mode'), cache: 'BYPASS' });

      expect([first.cacheStatus, second.cacheStatus, bypassed.cacheStatus]).toEqual(['MISS', 'HIT', 'BYPASS']);
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
    });

    it('follows a runtime override of CACHE_API_CALLS', async () => {
      const { llm, overrides } = await harness.start();

      const before = await llm.sendMessage({ messages: user('overridden mode') });
      await overrides.set('CACHE_API_CALLS', 'True', 'test');
      const miss = await llm.sendMessage({ messages: user('overridden mode') });
      const hit = await llm.sendMessage({ messages: user('overridden mode') });

      expect([before.cacheStatus, miss.cacheStatus, hit.cacheStatus]).toEqual(['BYPASS', 'MISS', 'HIT']);
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
    });

    it('serves a hit from the database after a restart', async () => {
      const first = await harness.start();
      const miss = await first.llm.sendMessage({ messages: user('survive a restart'), cache: 'USE' });
      await first.close();

      const second = await harness.start();
      const hit = await second.llm.sendMessage({ messages: user('survive a restart'), cache: 'USE' });

      expect(hit.cacheStatus).toBe('HIT');
      expect(hit.message).toEqual(miss.message);
      expect(hit.usage).toEqual(miss.usage);
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
    });

    it('does not serve an expired entry, from memory or from the database', async () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      const first = await harness.start({ ini: '[Cache]\nTTL=60' });

      const miss = await first.llm.sendMessage({ messages: user('expire me'), cache: 'USE' });
      const hit = await first.llm.sendMessage({ messages: user('expire me'), cache: 'USE' });
      vi.setSystemTime(Date.now() + 61_000);
      const expiredInMemory = await first.llm.sendMessage({ messages: user('expire me'), cache: 'USE' });
      await first.close();
      vi.setSystemTime(Date.now() + 61_000);
      const second = await harness.start({ ini: '[Cache]\nTTL=60' });
      const expiredInDatabase = await second.llm.sendMessage({ messages: user('expire me'), cache: 'USE' });

      expect([miss.cacheStatus, hit.cacheStatus, expiredInMemory.cacheStatus, expiredInDatabase.cacheStatus]).toEqual(['MISS', 'HIT', 'MISS', 'MISS']);
      expect(harness.fake.requestsTo('chat')).toHaveLength(3);
      const row = await historyRow(harness, expiredInDatabase.call.id);
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: row.cacheKey! } });
      expect(entry.expiresAt!.getTime() - entry.createdAt.getTime()).toBe(60_000);
      expect(entry.createdByCallId).toBe(expiredInDatabase.call.id);
    });

    it('stores only successful responses', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', { error: { status: 400, message: 'no' } });

      const error = await failure(llm.sendMessage({ messages: user('fail first'), cache: 'USE' }));
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', cacheStatus: 'MISS' });
      expect(await harness.prisma.cacheEntry.count({ where: { key: row.cacheKey! } })).toBe(0);

      harness.fake.reset();
      const retried = await llm.sendMessage({ messages: user('fail first'), cache: 'USE' });
      expect(retried.cacheStatus).toBe('MISS');
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
    });

    it('shares a key between messages whose keys come in another order', async () => {
      const { llm } = await harness.start();
      const reordered = [{ content: 'same question', role: 'user' }] as ChatMessage[];

      const first = await llm.sendMessage({ messages: user('same question'), temperature: 0.5, cache: 'USE' });
      const second = await llm.sendMessage({ cache: 'USE', temperature: 0.5, messages: reordered });

      expect(second.cacheStatus).toBe('HIT');
      expect(second.call.cacheKey).toBe(first.call.cacheKey);
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
    });

    it('misses when messages, model, temperature, response format or API type change', async () => {
      const { llm } = await harness.start();
      const base = { messages: user('vary me'), cache: 'USE' } as const;

      const results = [
        await llm.sendMessage(base),
        await llm.sendMessage({ ...base, messages: user('vary me!') }),
        await llm.sendMessage({ ...base, model: 'gpt-4o' }),
        await llm.sendMessage({ ...base, temperature: 0.2 }),
        await llm.sendMessage({ ...base, responseFormat: { type: 'json_object' } }),
        await llm.sendMessage({ ...base, apiType: 'azure' }),
      ];
      const again = await llm.sendMessage(base);

      expect(results.map((result) => result.cacheStatus)).toEqual(['MISS', 'MISS', 'MISS', 'MISS', 'MISS', 'MISS']);
      expect(new Set(results.map((result) => result.call.cacheKey)).size).toBe(6);
      expect(harness.fake.requestsTo('chat')).toHaveLength(6);
      expect(again.cacheStatus).toBe('HIT');
      expect(again.call.cacheKey).toBe(results[0]!.call.cacheKey);
    });

    it('leaves TIMEOUT out of the key', async () => {
      const first = await harness.start({ openai: { TIMEOUT: 60 } });
      const miss = await first.llm.sendMessage({ messages: user('patience'), cache: 'USE' });
      // Written before the second instance starts: it reads the keys present then, rather than
      // hearing of this one by a notification that may come after its call (the presence filter).
      await first.history.flush();
      const second = await harness.start({ openai: { TIMEOUT: 10 } });

      const hit = await second.llm.sendMessage({ messages: user('patience'), cache: 'USE' });

      expect(hit.cacheStatus).toBe('HIT');
      expect(hit.call.cacheKey).toBe(miss.call.cacheKey);
    });
  });

  describe('concurrent identical calls', () => {
    it('makes one upstream request for 50 concurrent identical misses', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', { json: chatCompletion({ content: 'shared answer', model: 'gpt-4o-mini' }), delayMs: 150 });

      const results = await Promise.all(
        Array.from({ length: 50 }, () => llm.sendMessage({ messages: user('everyone asks this'), cache: 'USE', tags: ['single-flight'] })),
      );

      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(results.filter((result) => result.cacheStatus === 'MISS')).toHaveLength(1);
      expect(results.filter((result) => result.cacheStatus === 'HIT')).toHaveLength(49);
      expect(new Set(results.map((result) => result.message.content))).toEqual(new Set(['shared answer']));
      await harness.flush();
      expect(await harness.prisma.llmCall.count({ where: { tags: { has: 'single-flight' } } })).toBe(50);
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: results[0]!.call.cacheKey! } });
      expect(entry.hitCount).toBe(49);
    });

    it("lets a caller abort its wait without failing the others waiting on the same upstream call", async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', { json: chatCompletion({ content: 'worth the wait', model: 'gpt-4o-mini' }), delayMs: 200 });
      const leaver = new AbortController();

      const first = failure(llm.sendMessage({ messages: user('a slow question'), cache: 'USE', signal: leaver.signal }));
      while (harness.fake.requestsTo('chat').length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      const others = Promise.all(Array.from({ length: 3 }, () => llm.sendMessage({ messages: user('a slow question'), cache: 'USE' })));
      leaver.abort();

      expect((await first).code).toBe('ABORTED');
      const answers = await others;
      expect(answers.map((answer) => answer.message.content)).toEqual(Array(3).fill('worth the wait'));
      expect(answers.map((answer) => answer.cacheStatus)).toEqual(['HIT', 'HIT', 'HIT']);
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      const later = await llm.sendMessage({ messages: user('a slow question'), cache: 'USE' });
      expect(later.cacheStatus).toBe('HIT');
    });

    it('makes one upstream request for 20 concurrent embeddings of the same texts, in any order', async () => {
      const { llm } = await harness.start();
      harness.fake.script('embeddings', (request) => ({ json: embeddingsResponse({ inputs: request.body.input, model: 'text-embedding-3-small', dimensions: 8 }), delayMs: 100 }));

      const results = await Promise.all(
        Array.from({ length: 20 }, (_unused, index) => llm.embed({ texts: index % 2 === 0 ? ['together one', 'together two'] : ['together two', 'together one'], cache: 'USE' })),
      );

      expect(harness.fake.requestsTo('embeddings')).toHaveLength(1);
      expect(results.filter((result) => result.cacheStatus === 'MISS')).toHaveLength(1);
      expect(results.filter((result) => result.cacheStatus === 'HIT')).toHaveLength(19);
      const one = embeddingVector('together one', 8);
      for (const [index, result] of results.entries()) {
        expect(result.embeddings[index % 2 === 0 ? 0 : 1]!.vector).toEqual(one);
      }
      expect(results.find((result) => result.cacheStatus === 'MISS')!.attempts).toBe(1);
      expect(results.filter((result) => result.attempts === 0)).toHaveLength(19);
    });

    it("shares one upstream failure among concurrent callers, each with its own history row", async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', { error: { status: 400, message: 'bad' }, delayMs: 100 });

      const errors = await Promise.all(Array.from({ length: 10 }, () => failure(llm.sendMessage({ messages: user('a doomed question'), cache: 'USE' }))));

      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(errors.map((error) => error.code)).toEqual(Array(10).fill('PROVIDER_BAD_REQUEST'));
      const ids = errors.map((error) => error.details.callId as string);
      expect(new Set(ids).size).toBe(10);
      await harness.flush();
      const rows = await harness.prisma.llmCall.findMany({ where: { id: { in: ids } } });
      expect(rows.map((row) => row.status)).toEqual(Array(10).fill('ERROR'));
      // Only the caller that made the request owns its attempt.
      expect(rows.map((row) => row.attemptCount).sort()).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
      expect(await harness.prisma.llmAttempt.count({ where: { callId: { in: ids } } })).toBe(1);
    });
  });

  describe('embeddings', () => {
    it('embeds a batch in one request with each distinct text once, then caches per text', async () => {
      const { llm } = await harness.start();

      const first = await llm.embed({ texts: ['alpha', 'beta', 'alpha', 'gamma'], cache: 'USE' });

      expect(harness.fake.requestsTo('embeddings').map((request) => request.body)).toEqual([
        { model: 'text-embedding-3-small', input: ['alpha', 'beta', 'gamma'], encoding_format: 'float' },
      ]);
      expect(first.embeddings.map((embedding) => embedding.vector)).toEqual(['alpha', 'beta', 'alpha', 'gamma'].map(vectorOf));
      expect(first.embeddings.map((embedding) => embedding.cacheStatus)).toEqual(['MISS', 'MISS', 'MISS', 'MISS']);
      expect(first.cacheStatus).toBe('MISS');

      const second = await llm.embed({ texts: ['gamma', 'delta', 'alpha'], cache: 'USE' });

      expect(harness.fake.requestsTo('embeddings').map((request) => request.body.input)).toEqual([['alpha', 'beta', 'gamma'], ['delta']]);
      expect(second.embeddings.map((embedding) => embedding.vector)).toEqual(['gamma', 'delta', 'alpha'].map(vectorOf));
      expect(second.embeddings.map((embedding) => embedding.cacheStatus)).toEqual(['HIT', 'MISS', 'HIT']);
      expect(second.cacheStatus).toBe('MISS');

      const third = await llm.embed({ texts: ['delta', 'beta'], cache: 'USE' });

      expect(harness.fake.requestsTo('embeddings')).toHaveLength(2);
      expect(third.embeddings.map((embedding) => embedding.vector)).toEqual(['delta', 'beta'].map(vectorOf));
      expect(third.cacheStatus).toBe('HIT');
      expect(third.attempts).toBe(0);

      const rows = await Promise.all([first, second, third].map((result) => historyRow(harness, result.call.id)));
      expect(rows.map(({ kind: callKind, model, cacheStatus, attemptCount }) => ({ kind: callKind, model, cacheStatus, attemptCount }))).toEqual([
        { kind: 'EMBEDDING', model: 'text-embedding-3-small', cacheStatus: 'MISS', attemptCount: 1 },
        { kind: 'EMBEDDING', model: 'text-embedding-3-small', cacheStatus: 'MISS', attemptCount: 1 },
        { kind: 'EMBEDDING', model: 'text-embedding-3-small', cacheStatus: 'HIT', attemptCount: 0 },
      ]);
      const entries = await harness.prisma.cacheEntry.findMany({ where: { kind: 'EMBEDDING', createdByCallId: { in: [first.call.id, second.call.id] } } });
      expect(entries).toHaveLength(4);
    });

    it('serves cached vectors after a restart', async () => {
      const first = await harness.start();
      await first.llm.embed({ texts: ['persisted text'], cache: 'USE' });
      await first.close();

      const second = await harness.start();
      const result = await second.llm.embed({ texts: ['persisted text'], cache: 'USE' });

      expect(result.cacheStatus).toBe('HIT');
      expect(result.embeddings[0]!.vector).toEqual(vectorOf('persisted text'));
      expect(harness.fake.requestsTo('embeddings')).toHaveLength(1);
    });

    it('neither reads nor stores vectors when bypassing the cache', async () => {
      const { llm } = await harness.start();

      const result = await llm.embed({ texts: ['not kept', 'not kept either'] });
      const single = await llm.embed({ texts: ['not kept'] });

      expect(result.cacheStatus).toBe('BYPASS');
      expect(result.embeddings.map((embedding) => embedding.vector)).toEqual(['not kept', 'not kept either'].map(vectorOf));
      expect(harness.fake.requestsTo('embeddings')).toHaveLength(2);
      await harness.flush();
      expect(await harness.prisma.cacheEntry.count({ where: { createdByCallId: { in: [result.call.id, single.call.id] } } })).toBe(0);
      expect(await historyRow(harness, single.call.id)).toMatchObject({ cacheStatus: 'BYPASS', cacheKey: null });
    });

    it('uses the model a call names', async () => {
      const { llm } = await harness.start({ openai: { EMBEDDING_MODEL: 'text-embedding-3-large' } });

      const configured = await llm.embed({ texts: ['one'] });
      const named = await llm.embed({ texts: ['one'], model: 'text-embedding-ada-002' });

      expect(harness.fake.requestsTo('embeddings').map((request) => request.body.model)).toEqual(['text-embedding-3-large', 'text-embedding-ada-002']);
      expect([configured.embeddings[0]!.model, named.embeddings[0]!.model]).toEqual(['text-embedding-3-large', 'text-embedding-ada-002']);
    });
  });
});
