import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { graphql } from '../gql/index.ts';
import { createTestApp, testConfig, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

const MoneySend = graphql(`
  mutation MoneySend($input: SendMessageInput!) {
    sendMessage(input: $input) {
      cacheStatus
      call {
        id
        costUsd
        costSavedUsd
      }
    }
  }
`);

const MoneyCall = graphql(`
  query MoneyCall($id: ID!) {
    call(id: $id) {
      cacheStatus
      costUsd
      costSavedUsd
    }
  }
`);

const MoneyStats = graphql(`
  query MoneyStats($filter: CallFilter) {
    callStats(filter: $filter, groupBy: [CACHE_STATUS]) {
      cacheStatus
      calls
      costUsd
      costSavedUsd
    }
  }
`);

const MoneyByCost = graphql(`
  query MoneyByCost($after: String) {
    calls(first: 1, after: $after, filter: { tags: ["money-order"] }, orderBy: { field: COST, direction: DESC }) {
      edges {
        cursor
        node {
          costUsd
        }
      }
    }
  }
`);

const MoneyKey = graphql(`
  mutation MoneyKey($input: CreateApiKeyInput!) {
    createApiKey(input: $input) {
      apiKey {
        limits {
          usdPerDay
          usdPerMonth
        }
        usage {
          usdToday
        }
      }
    }
  }
`);

function dataOf<T>(result: GraphQLResponse<T>): T {
  expect(result.errors).toBeUndefined();
  return result.data!;
}

describe.each(databaseKinds)('money through the API on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n[Prices]\ngpt-4o-mini=0.15, 0.60\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-money' }));
  });
  afterAll(async () => {
    await testApp?.dispose();
    await fake?.close();
  });
  beforeEach(() => {
    fake.reset();
    // 1,234 prompt and 567 completion tokens: 0.0001851 + 0.0003402, which floats add up to 0.0005252999999999999.
    fake.script('chat', (request) => ({ json: chatCompletion({ content: 'priced', model: request.body.model, usage: { prompt_tokens: 1234, completion_tokens: 567 } }) }));
  });

  const send = async (content: string, cache: 'USE' | 'BYPASS', tags: string[]) =>
    dataOf(await testApp.execute(MoneySend, { input: { messages: [{ role: 'USER', content }], cache, tags } })).sendMessage;

  it('answers a cost of many digits exactly, as a string; a hit spent "0" and saved what the miss cost', async () => {
    const miss = await send('what does this cost?', 'USE', ['money-hit']);
    expect(miss.cacheStatus).toBe('MISS');
    expect(miss.call.costUsd).toBe('0.0005253');
    expect(miss.call.costSavedUsd).toBeNull();
    const hit = await send('what does this cost?', 'USE', ['money-hit']);
    expect(hit.cacheStatus).toBe('HIT');
    expect(hit.call).toMatchObject({ costUsd: '0', costSavedUsd: '0.0005253' });

    await testApp.services.history.flush();
    // Read back from the history: the same strings, whatever the column's scale.
    expect(dataOf(await testApp.execute(MoneyCall, { id: miss.call.id })).call).toEqual({ cacheStatus: 'MISS', costUsd: '0.0005253', costSavedUsd: null });
    expect(dataOf(await testApp.execute(MoneyCall, { id: hit.call.id })).call).toEqual({ cacheStatus: 'HIT', costUsd: '0', costSavedUsd: '0.0005253' });

    const stats = dataOf(await testApp.execute(MoneyStats, { filter: { tags: ['money-hit'] } })).callStats;
    expect(stats.sort((a, b) => a.cacheStatus!.localeCompare(b.cacheStatus!))).toEqual([
      { cacheStatus: 'HIT', calls: 1, costUsd: '0', costSavedUsd: '0.0005253' },
      { cacheStatus: 'MISS', calls: 1, costUsd: '0.0005253', costSavedUsd: null },
    ]);
  });

  it('sums the spend of many calls exactly in callStats', async () => {
    for (let index = 0; index < 30; index++) await send(`call ${index}`, 'BYPASS', ['money-sum']);
    await testApp.services.history.flush();
    const [bucket] = dataOf(await testApp.execute(MoneyStats, { filter: { tags: ['money-sum'] } })).callStats;
    // 30 x 0.0005253: a float sum would end in ...99999.
    expect(bucket).toEqual({ cacheStatus: 'BYPASS', calls: 30, costUsd: '0.015759', costSavedUsd: null });
  });

  it('orders calls by their exact cost, page after page', async () => {
    const usages: Record<string, [number, number]> = { big: [1234, 567], tiny: [1, 0], middle: [10, 10] };
    fake.script('chat', (request) => {
      const [prompt, completion] = usages[String((request.body.messages as { content: string }[])[0]!.content)]!;
      return { json: chatCompletion({ content: 'priced', model: request.body.model, usage: { prompt_tokens: prompt, completion_tokens: completion } }) };
    });
    for (const content of Object.keys(usages)) await send(content, 'BYPASS', ['money-order']);
    await testApp.services.history.flush();
    const costs: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 3; page++) {
      const [edge] = dataOf(await testApp.execute(MoneyByCost, { after })).calls.edges;
      costs.push(edge!.node.costUsd!);
      after = edge!.cursor;
    }
    expect(costs).toEqual(['0.0005253', '0.0000075', '0.00000015']);
    expect(dataOf(await testApp.execute(MoneyByCost, { after })).calls.edges).toEqual([]);
    const forged = Buffer.from(JSON.stringify(['1e-3', '0190f3b2-0000-7000-8000-000000000001'])).toString('base64url');
    expect((await testApp.execute(MoneyByCost, { after: forged })).errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' } });
  });

  it('takes a budget as a decimal string, and refuses a number for it', async () => {
    const created = dataOf(await testApp.execute(MoneyKey, { input: { name: 'budget', role: 'MEMBER', tenant: 'money', limits: { usdPerDay: '0.10', usdPerMonth: '12.345678901234' } } }));
    expect(created.createApiKey.apiKey).toEqual({ limits: { usdPerDay: '0.1', usdPerMonth: '12.345678901234' }, usage: { usdToday: '0' } });

    const asNumber = await testApp.execute(MoneyKey, { input: { name: 'float', role: 'MEMBER', tenant: 'money', limits: { usdPerDay: 0.1 as unknown as string } } });
    expect(asNumber.errors?.[0]?.message).toMatch(/Decimal expects a decimal string/);
    const tooPrecise = await testApp.execute(MoneyKey, { input: { name: 'fine', role: 'MEMBER', tenant: 'money', limits: { usdPerDay: '0.0000000000001' } } });
    expect(tooPrecise.errors?.[0]?.message).toMatch(/at most 12 decimals/);
    const negative = await testApp.execute(MoneyKey, { input: { name: 'negative', role: 'MEMBER', tenant: 'money', limits: { usdPerDay: '-1' } } });
    expect(negative.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' } });
  });
});
