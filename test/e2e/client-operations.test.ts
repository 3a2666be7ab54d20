import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { print } from 'graphql';
import {
  ApiKeysDocument,
  CacheEntriesDocument,
  CallEventsDocument,
  type CallEventsSubscription,
  CallDetailDocument,
  CallStatsDocument,
  CallsOverTimeDocument,
  CostByModelAndDayDocument,
  MeDocument,
  ProvidersAndOverridesDocument,
  RecentCallsDocument,
} from '../../src/client/generated/graphql.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { subscribe } from '../support/sse.ts';

// The typed operations shipped for dashboards must keep working against the server as it is.
describe('the dashboard client operations (src/client)', () => {
  let fake: FakeOpenAI;
  let testApp: TestApp;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    testApp = await createTestApp(
      'pglite',
      testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nCACHE_API_CALLS=True\n[Prices]\ngpt-4o-mini=0.15, 0.60\n`, { OPENAI_API_KEY: 'sk-client-test' }),
    );
    const ask = () => testApp.services.llm.sendMessage({ messages: [{ role: 'user', content: 'dashboards' }], tags: ['dashboard'] });
    await ask();
    await ask();
    await testApp.services.history.flush();
  });
  afterAll(async () => {
    await testApp?.dispose();
    await fake?.close();
  });

  it('RecentCalls and CallDetail show the calls with their attempts', async () => {
    const recent = await testApp.execute(RecentCallsDocument, { filter: { tags: ['dashboard'] } });
    expect(recent.errors).toBeUndefined();
    const edges = recent.data!.calls.edges;
    expect(edges.map((edge) => edge.node.cacheStatus)).toEqual(['HIT', 'MISS']);
    expect(edges.map((edge) => [edge.node.streamed, edge.node.timeToFirstTokenMs])).toEqual([
      [false, null],
      [false, null],
    ]);
    const detail = await testApp.execute(CallDetailDocument, { id: edges[1]!.node.id });
    expect(detail.data!.call!.attempts.map((attempt) => attempt.httpStatus)).toEqual([200]);
    expect(detail.data!.call!.cacheEntry!.hitCount).toBe(1);
  });

  it('CallStats, CacheEntries and ProvidersAndOverrides answer without errors', async () => {
    const stats = await testApp.execute(CallStatsDocument, { groupBy: ['CACHE_STATUS'], filter: { tags: ['dashboard'] } });
    expect(stats.errors).toBeUndefined();
    expect(stats.data!.callStats.map((bucket) => [bucket.cacheStatus, bucket.calls])).toEqual([
      ['HIT', 1],
      ['MISS', 1],
    ]);
    const entries = await testApp.execute(CacheEntriesDocument, { orderBy: { field: 'HIT_COUNT' } });
    expect(entries.data!.cacheEntries.edges[0]!.node.hitCount).toBe(1);
    const providers = await testApp.execute(ProvidersAndOverridesDocument);
    expect(providers.data!.providers.find((provider) => provider.active)?.apiType).toBe('openai');
  });

  it('CallsOverTime and CostByModelAndDay bucket the calls by hour, and by model and day', async () => {
    // The buckets the two calls fall in (the same hour, unless they straddle one).
    const calls = (await testApp.execute(RecentCallsDocument, { filter: { tags: ['dashboard'] } })).data!.calls.edges.map((edge) => edge.node);
    const countBy = (prefix: number) => {
      const counts = new Map<string, number>();
      for (const call of [...calls].reverse()) counts.set(call.createdAt.slice(0, prefix), (counts.get(call.createdAt.slice(0, prefix)) ?? 0) + 1);
      return [...counts];
    };
    const overTime = await testApp.execute(CallsOverTimeDocument, { filter: { tags: ['dashboard'] } });
    expect(overTime.errors).toBeUndefined();
    expect(overTime.data!.callStats.map((bucket) => [bucket.hour?.slice(0, 13), bucket.calls])).toEqual(countBy(13));
    expect(overTime.data!.callStats.reduce((sum, bucket) => sum + bucket.cacheHits, 0)).toBe(1);
    const byDay = await testApp.execute(CallsOverTimeDocument, { filter: { tags: ['dashboard'] }, groupBy: ['DAY'] });
    expect(byDay.data!.callStats.map((bucket) => [bucket.day?.slice(0, 10), bucket.calls])).toEqual(countBy(10));
    expect(byDay.data!.callStats.every((bucket) => bucket.hour === null)).toBe(true);
    const cost = await testApp.execute(CostByModelAndDayDocument, { filter: { tags: ['dashboard'] } });
    expect(cost.errors).toBeUndefined();
    expect(cost.data!.callStats.map((bucket) => [bucket.model, bucket.day?.slice(0, 10), bucket.calls])).toEqual(countBy(10).map(([day, count]) => ['gpt-4o-mini', day, count]));
    const spent = cost.data!.callStats.reduce((sum, bucket) => sum + Number(bucket.costUsd ?? 0), 0);
    const saved = cost.data!.callStats.reduce((sum, bucket) => sum + Number(bucket.costSavedUsd ?? 0), 0);
    // The miss was paid for; the hit saved what the miss cost.
    expect(spent).toBeGreaterThan(0);
    expect(saved).toBeCloseTo(spent, 12);
  });

  it('Me shows the key a dashboard signs in with, and ApiKeys lists the keys for an ADMIN (open mode here)', async () => {
    const created = await testApp.services.keys.create({ name: 'dashboard', role: 'VIEWER', tenant: 'default', limits: { requestsPerMinute: 60 } }, 'test');
    const me = await testApp.execute(MeDocument, {}, { authorization: `Bearer ${created.key}` });
    expect(me.data!.me).toMatchObject({ id: created.record.id, role: 'VIEWER', tenant: 'default', limits: { requestsPerMinute: 60, usdPerDay: null } });
    const keys = await testApp.execute(ApiKeysDocument);
    expect(keys.data!.apiKeys.edges.map((edge) => edge.node.id)).toContain(created.record.id);
  });

  it('CallEvents streams the next call over SSE', async () => {
    const stream = await subscribe<CallEventsSubscription>(testApp.app.fetch, 'http://callboard/graphql', {
      query: print(CallEventsDocument),
      variables: { filter: { tags: ['live'] } },
    });
    try {
      const made = await testApp.services.llm.sendMessage({ messages: [{ role: 'user', content: 'live' }], tags: ['live'], cache: 'BYPASS' });
      await testApp.services.history.flush();
      const event = await stream.next();
      expect(event?.errors).toBeUndefined();
      expect(event?.data?.callEvents).toMatchObject({ missed: 0, call: { id: made.call.id, status: 'SUCCESS', cacheStatus: 'BYPASS', tags: ['live'] } });
    } finally {
      await stream.close();
    }
  });
});
