import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { compareUsd } from '../../src/money.ts';
import { createServices, type Services } from '../../src/services.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

const masterKey = 'cb-limits-master-SECRET';

interface Answer {
  data?: { sendMessage?: { cacheStatus: string; call: { id: string } } } | null;
  errors?: { message: string; extensions: { code: string; retryAfterSeconds?: number; details?: Record<string, unknown> } }[];
}

async function send(app: App, key: string, content: string, cache = 'BYPASS', maxTokens = 100): Promise<Answer> {
  const response = await app.fetch('http://localhost/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({
      query: `mutation ($content: String!, $cache: CacheMode!, $maxTokens: Int!) {
        sendMessage(input: { messages: [{ role: USER, content: $content }], cache: $cache, maxTokens: $maxTokens }) { cacheStatus call { id } }
      }`,
      variables: { content, cache, maxTokens },
    }),
  });
  return (await response.json()) as Answer;
}

const codeOf = (answer: Answer) => answer.errors?.[0]?.extensions.code ?? 'OK';

describe.each(databaseKinds)('limits and budgets of API keys on %s, two instances when on Postgres', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let otherDatabase: Database;
  let other: { services: Services; app: App };

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    // gpt-4o-mini at $1 in and $1 out per million tokens keeps the arithmetic readable.
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\n[Prices]\ngpt-4o-mini=1, 1\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-limits', CALLBOARD_MASTER_KEY: masterKey }));
    const url = testApp.testDatabase.url;
    otherDatabase = url ? await createDatabase({ url, dataDir: 'unused', poolSize: 4 }) : testApp.testDatabase.database;
    const services = await createServices({ loaded: testApp.services.loaded, database: otherDatabase, logger: createLogger('silent') });
    other = { services, app: createApp(services) };
  });

  afterAll(async () => {
    await other?.app.dispose();
    await other?.services.close();
    if (otherDatabase && otherDatabase !== testApp?.testDatabase.database) await otherDatabase.close();
    await testApp?.dispose();
    await fake?.close();
  });

  const instances = () => [testApp.app, other.app];

  it('lets exactly 10 of 40 concurrent calls through on a 10-requests-per-minute key, refuses the rest without calling upstream, and records them', async () => {
    const { key, record } = await testApp.services.keys.create({ name: 'rpm', role: 'MEMBER', tenant: 'limits', limits: { requestsPerMinute: 10 } }, 'test');
    const before = fake.requestsTo('chat').length;
    const answers = await Promise.all(Array.from({ length: 40 }, (_unused, index) => send(instances()[index % 2]!, key, `rpm ${index}`)));
    const codes = answers.map(codeOf);
    expect(codes.filter((code) => code === 'OK')).toHaveLength(10);
    expect(codes.filter((code) => code === 'RATE_LIMITED')).toHaveLength(30);
    expect(fake.requestsTo('chat').length - before).toBe(10);
    const refused = answers.find((answer) => codeOf(answer) === 'RATE_LIMITED')!.errors![0]!.extensions;
    expect(refused.details).toMatchObject({ limit: 'requestsPerMinute', maximum: 10 });
    expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(refused.retryAfterSeconds).toBe(refused.details!.retryAfterSeconds);

    await Promise.all([testApp.services.history.flush(), other.services.history.flush()]);
    const rows = await testApp.testDatabase.database.query<{ status: string; errorCode: string | null; attemptCount: number }>(
      `SELECT "status"::text AS "status", "errorCode", "attemptCount" FROM "LlmCall" WHERE "apiKeyId" = $1`,
      [record.id],
    );
    expect(rows).toHaveLength(40);
    expect(rows.filter((row) => row.errorCode === 'RATE_LIMITED' && row.attemptCount === 0)).toHaveLength(30);
  });

  it('never lets a USD budget be overspent by more than one reservation, and settles with what the calls really cost', async () => {
    // Each call reserves its prompt plus 2,000 tokens ($0.002 at $1 per million) and really spends far less.
    const { key, record } = await testApp.services.keys.create({ name: 'budget', role: 'MEMBER', tenant: 'limits', limits: { usdPerDay: '0.01' } }, 'test');
    const answers = await Promise.all(Array.from({ length: 30 }, (_unused, index) => send(instances()[index % 2]!, key, `budget ${index}`, 'BYPASS', 2000)));
    const passed = answers.filter((answer) => codeOf(answer) === 'OK').length;
    expect(answers.every((answer) => ['OK', 'BUDGET_EXCEEDED'].includes(codeOf(answer)))).toBe(true);
    // Four reservations of a little over $0.002 (the prompt and 2,000 tokens) fit at once in $0.01;
    // more pass only as settled calls give back what they did not spend.
    expect(passed).toBeGreaterThanOrEqual(4);
    await Promise.all([testApp.services.history.flush(), other.services.history.flush()]);
    const [spent] = await testApp.testDatabase.database.query<{ usd: string }>(`SELECT trim_scale(coalesce(sum("costUsd"), 0))::text AS "usd" FROM "LlmCall" WHERE "apiKeyId" = $1 AND "status" = 'SUCCESS'`, [
      record.id,
    ]);
    expect(compareUsd(spent!.usd, '0.012')).toBeLessThanOrEqual(0);
    // Settling happens behind the callers: wait for the counter to equal what the history says was spent.
    const deadline = Date.now() + 5000;
    let usdToday = '-1';
    while (Date.now() < deadline) {
      usdToday = (await testApp.services.limits.usage([record.id])).get(record.id)!.usdToday;
      if (usdToday === spent!.usd) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Exact: the counter and the history add up the same decimal amounts.
    expect(usdToday).toBe(spent!.usd);
  });

  it('spends nothing on a cache hit, and shows usage against each limit on the key', async () => {
    const { key, record } = await testApp.services.keys.create({ name: 'hits', role: 'MEMBER', tenant: 'limits', limits: { requestsPerMinute: 1, tokensPerMinute: 1000 } }, 'test');
    expect(codeOf(await send(testApp.app, key, 'cached once', 'USE'))).toBe('OK');
    for (let index = 0; index < 5; index += 1) {
      const hit = await send(testApp.app, key, 'cached once', 'USE');
      expect(hit.data?.sendMessage?.cacheStatus).toBe('HIT');
    }
    expect(codeOf(await send(testApp.app, key, 'not cached', 'USE'))).toBe('RATE_LIMITED');
    const response = await testApp.app.fetch('http://localhost/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ query: '{ me { id limits { requestsPerMinute } usage { requestsThisMinute tokensThisMinute } } }' }),
    });
    const me = ((await response.json()) as { data: { me: { id: string; limits: { requestsPerMinute: number }; usage: { requestsThisMinute: number; tokensThisMinute: number } } } }).data.me;
    expect(me).toMatchObject({ id: record.id, limits: { requestsPerMinute: 1 } });
    expect(me.usage.requestsThisMinute).toBeCloseTo(1, 0);
    expect(me.usage.tokensThisMinute).toBeGreaterThan(0);
  });
});
