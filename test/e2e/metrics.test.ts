import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { defaultChatResponse, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { listen, send, type Listening } from '../support/http.ts';
import { parsePrometheusText, type Scrape } from '../support/prometheus.ts';
import { startServerProcess } from '../support/server-process.ts';

const masterKey = 'cb-metrics-master-SECRET';
const user = (content: string) => [{ role: 'user' as const, content }];

describe.each(databaseKinds)('GET /metrics on %s, over HTTP', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  let client: OpenAI;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMODEL=gpt-4o-mini\nCACHE_API_CALLS=True\nMAX_ATTEMPTS=3\nWAITING_TIME=0.01\n[Prices]\ngpt-4o-mini=1, 2\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-metrics-upstream', CALLBOARD_MASTER_KEY: masterKey }));
    server = await listen(testApp.app);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: masterKey, maxRetries: 0 });
  });

  afterAll(async () => {
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
  });

  async function scrape(key = masterKey): Promise<Scrape> {
    const answer = await send(server.port, { path: '/metrics', headers: { authorization: `Bearer ${key}` } });
    expect(answer.status).toBe(200);
    return parsePrometheusText(answer.text);
  }

  it('counts a miss, a hit, a retried 500 and an error by their labels, with their attempts, latencies, tokens and cost', async () => {
    fake.reset();
    const miss = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('count me once') });
    const hit = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('count me once') });
    let seen = 0;
    fake.script('chat', (request) => (++seen === 1 ? { error: { status: 500, message: 'upstream broke' } } : defaultChatResponse(request)));
    const retried = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('retry me') });
    fake.script('chat', { error: { status: 400, message: 'bad request upstream' } });
    const failed = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('refuse me') }).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(OpenAI.BadRequestError);
    fake.reset();

    const metrics = await scrape();
    const chat = { kind: 'CHAT', model: 'gpt-4o-mini', provider: 'openai', tenant: 'default' };
    expect(metrics.types.get('callboard_calls_total')).toBe('counter');
    expect(metrics.value('callboard_calls_total', { ...chat, status: 'SUCCESS', cache_status: 'MISS' })).toBe(2);
    expect(metrics.value('callboard_calls_total', { ...chat, status: 'SUCCESS', cache_status: 'HIT' })).toBe(1);
    expect(metrics.value('callboard_calls_total', { ...chat, status: 'ERROR', cache_status: 'MISS' })).toBe(1);

    const attempts = { provider: 'openai', model: 'gpt-4o-mini' };
    expect(metrics.value('callboard_upstream_attempts_total', { ...attempts, http_status: '200' })).toBe(2);
    expect(metrics.value('callboard_upstream_attempts_total', { ...attempts, http_status: '500' })).toBe(1);
    expect(metrics.value('callboard_upstream_attempts_total', { ...attempts, http_status: '400' })).toBe(1);
    expect(metrics.find('callboard_upstream_retries_total')).toEqual([{ name: 'callboard_upstream_retries_total', labels: { provider: 'openai', http_status: '500' }, value: 1 }]);

    expect(metrics.types.get('callboard_call_duration_seconds')).toBe('histogram');
    expect(metrics.value('callboard_call_duration_seconds_count', { kind: 'CHAT', cache_status: 'MISS' })).toBe(3);
    expect(metrics.value('callboard_call_duration_seconds_count', { kind: 'CHAT', cache_status: 'HIT' })).toBe(1);
    expect(metrics.value('callboard_call_duration_seconds_bucket', { kind: 'CHAT', cache_status: 'MISS', le: '+Inf' })).toBe(3);
    expect(metrics.value('callboard_overhead_seconds_count', { kind: 'CHAT', cache_status: 'MISS' })).toBe(3);
    expect(metrics.value('callboard_overhead_seconds_count', { kind: 'CHAT', cache_status: 'HIT' })).toBe(1);
    // Three calls reached the provider: the hit did not.
    expect(metrics.value('callboard_upstream_duration_seconds_count', { provider: 'openai' })).toBe(3);
    // Callboard's own time is what is left of the latency once the provider's time and the waits are taken out.
    const callSeconds = metrics.value('callboard_call_duration_seconds_sum', { kind: 'CHAT', cache_status: 'MISS' })!;
    const overheadSeconds = metrics.value('callboard_overhead_seconds_sum', { kind: 'CHAT', cache_status: 'MISS' })!;
    expect(overheadSeconds).toBeGreaterThan(0);
    expect(overheadSeconds).toBeLessThan(callSeconds);
    // The retry's backoff wait (10 ms, less jitter) is neither the provider's time nor Callboard's.
    expect(callSeconds - overheadSeconds - metrics.sum('callboard_upstream_duration_seconds_sum')).toBeGreaterThan(0.005);
    expect(metrics.find('callboard_overhead_seconds_bucket', { kind: 'CHAT', cache_status: 'MISS' }).map((bucket) => bucket.labels.le)[0]).toBe('0.0005');

    const spentPrompt = miss.usage!.prompt_tokens + retried.usage!.prompt_tokens;
    const spentCompletion = miss.usage!.completion_tokens + retried.usage!.completion_tokens;
    const tokens = { model: 'gpt-4o-mini', tenant: 'default' };
    expect(metrics.value('callboard_tokens_total', { ...tokens, type: 'prompt', outcome: 'spent' })).toBe(spentPrompt);
    expect(metrics.value('callboard_tokens_total', { ...tokens, type: 'completion', outcome: 'spent' })).toBe(spentCompletion);
    expect(metrics.value('callboard_tokens_total', { ...tokens, type: 'prompt', outcome: 'saved' })).toBe(hit.usage!.prompt_tokens);
    expect(metrics.value('callboard_tokens_total', { ...tokens, type: 'completion', outcome: 'saved' })).toBe(hit.usage!.completion_tokens);
    expect(metrics.value('callboard_cost_usd_total', { ...tokens, outcome: 'spent' })).toBeCloseTo((spentPrompt * 1 + spentCompletion * 2) / 1e6, 12);
    expect(metrics.value('callboard_cost_usd_total', { ...tokens, outcome: 'saved' })).toBeCloseTo((hit.usage!.prompt_tokens + hit.usage!.completion_tokens * 2) / 1e6, 12);
  });

  it('reports the history writer, the database pools and the process', async () => {
    await testApp.services.history.flush();
    const metrics = await scrape();
    // Calls, cache entries and hits: at least the five calls of the test before and this one's history rows.
    expect(metrics.value('callboard_history_rows_written_total')).toBeGreaterThanOrEqual(5);
    expect(metrics.types.get('callboard_history_rows_written_total')).toBe('counter');
    expect(metrics.value('callboard_history_pending_rows')).toBe(0);
    expect(metrics.value('callboard_history_spool_rows')).toBe(0);
    expect(metrics.value('callboard_history_spool_bytes')).toBe(0);
    expect(metrics.value('callboard_history_write_lag_seconds')).toBe(0);
    expect(metrics.value('callboard_history_write_failures_total')).toBe(0);
    expect(metrics.value('callboard_history_rows_dropped_total')).toBe(0);
    const written = metrics.value('callboard_history_rows_written_total')!;
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages: user('one more row') });
    await testApp.services.history.flush();
    expect((await scrape()).value('callboard_history_rows_written_total')).toBeGreaterThanOrEqual(written + 2);

    if (kind === 'postgres') {
      expect([...metrics.labelValues('callboard_db_pool_connections', 'pool')].sort()).toEqual(['analytics', 'main']);
      expect(metrics.value('callboard_db_pool_connections', { pool: 'main' })).toBeGreaterThanOrEqual(1);
      expect(metrics.value('callboard_db_pool_waiting_requests', { pool: 'main' })).toBe(0);
    } else expect(metrics.find('callboard_db_pool_connections')).toEqual([]);

    expect(metrics.value('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(metrics.value('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(metrics.find('nodejs_eventloop_lag_p99_seconds')).toHaveLength(1);
  });

  it('keeps the model label to MAX_MODEL_LABELS values: 60 made-up models give at most 50 and "other"', async () => {
    fake.reset();
    for (let index = 0; index < 60; index++) {
      await client.chat.completions.create({ model: `made-up-model-${index}`, messages: user(`hello ${index}`) }, { headers: { 'x-callboard-cache': 'bypass' } });
    }
    const metrics = await scrape();
    const models = metrics.labelValues('callboard_calls_total', 'model');
    // gpt-4o-mini and text-embedding-3-small (configured) hold two of the 50: 48 of the made-up names got a label.
    expect(models.size).toBeLessThanOrEqual(51);
    expect([...models].filter((model) => model.startsWith('made-up-model-'))).toHaveLength(48);
    expect(models.has('other')).toBe(true);
    expect(models.has('made-up-model-47')).toBe(true);
    expect(models.has('made-up-model-48')).toBe(false);
    expect(metrics.value('callboard_calls_total', { kind: 'CHAT', status: 'SUCCESS', cache_status: 'BYPASS', model: 'other' })).toBe(12);
    expect(metrics.labelValues('callboard_tokens_total', 'model').size).toBeLessThanOrEqual(51);
    expect(metrics.labelValues('callboard_upstream_attempts_total', 'model').size).toBeLessThanOrEqual(51);
  });

  it('answers only an ADMIN once keys are on: 401 without a key, 403 for a MEMBER, 200 for an ADMIN key', async () => {
    const noKey = await send(server.port, { path: '/metrics' });
    expect(noKey.status).toBe(401);
    expect(JSON.parse(noKey.text)).toMatchObject({ error: { code: 'UNAUTHENTICATED', type: 'authentication_error' } });
    // GraphiQL's page opens without a key; /metrics asked for by a browser does not.
    expect((await send(server.port, { path: '/metrics', headers: { accept: 'text/html' } })).status).toBe(401);
    expect((await send(server.port, { path: '/metrics', headers: { authorization: 'Bearer cb_not-a-real-key' } })).status).toBe(401);

    const member = await testApp.services.keys.create({ name: 'member', role: 'MEMBER', tenant: 'metrics' }, 'test');
    const forbidden = await send(server.port, { path: '/metrics', headers: { authorization: `Bearer ${member.key}` } });
    expect(forbidden.status).toBe(403);
    expect(JSON.parse(forbidden.text)).toMatchObject({ error: { code: 'FORBIDDEN', type: 'permission_error', details: { requiredRole: 'ADMIN', role: 'MEMBER' } } });
    expect(forbidden.text).not.toContain('callboard_calls_total');

    const admin = await testApp.services.keys.create({ name: 'admin', role: 'ADMIN', tenant: 'metrics' }, 'test');
    const allowed = await send(server.port, { path: '/metrics', headers: { authorization: `Bearer ${admin.key}` } });
    expect(allowed.status).toBe(200);
    expect(allowed.text).toContain('# TYPE callboard_calls_total counter');
    const response = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${admin.key}` } });
    expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect((await fetch(`${server.url}/metrics`, { method: 'POST', headers: { authorization: `Bearer ${admin.key}` } })).status).toBe(404);
  });

  it("counts a key's calls under its tenant, embeddings as EMBEDDING", async () => {
    const member = await testApp.services.keys.create({ name: 'caller', role: 'MEMBER', tenant: 'team-blue' }, 'test');
    const memberClient = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: member.key, maxRetries: 0 });
    await memberClient.chat.completions.create({ model: 'gpt-4o-mini', messages: user('blue team asks') });
    await memberClient.embeddings.create({ model: 'text-embedding-3-small', input: 'embed me' });
    await memberClient.embeddings.create({ model: 'text-embedding-3-small', input: 'embed me' });
    const before = await scrape();
    // A streamed call counts once, when its last chunk is out, and stays out of the overhead; a GraphQL call counts as a /v1 one does.
    const stream = await memberClient.chat.completions.create({ model: 'gpt-4o-mini', messages: user('stream to blue'), stream: true });
    for await (const _chunk of stream);
    const graphql = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${member.key}` },
      body: JSON.stringify({ query: 'mutation { sendMessage(input: { messages: [{ role: USER, content: "graphql to blue" }] }) { call { id } } }' }),
    });
    expect(((await graphql.json()) as { errors?: unknown }).errors).toBeUndefined();
    const metrics = await scrape();
    const blue = { status: 'SUCCESS', provider: 'openai', tenant: 'team-blue' };
    expect(metrics.value('callboard_calls_total', { ...blue, kind: 'CHAT', cache_status: 'MISS', model: 'gpt-4o-mini' })).toBe(3);
    expect(metrics.value('callboard_call_duration_seconds_count', { kind: 'CHAT', cache_status: 'MISS' })).toBe(before.value('callboard_call_duration_seconds_count', { kind: 'CHAT', cache_status: 'MISS' })! + 2);
    expect(metrics.value('callboard_overhead_seconds_count', { kind: 'CHAT', cache_status: 'MISS' })).toBe(before.value('callboard_overhead_seconds_count', { kind: 'CHAT', cache_status: 'MISS' })! + 1);
    expect(metrics.value('callboard_calls_total', { ...blue, kind: 'EMBEDDING', cache_status: 'MISS', model: 'text-embedding-3-small' })).toBe(1);
    expect(metrics.value('callboard_calls_total', { ...blue, kind: 'EMBEDDING', cache_status: 'HIT', model: 'text-embedding-3-small' })).toBe(1);
    expect(metrics.value('callboard_tokens_total', { model: 'text-embedding-3-small', tenant: 'team-blue', type: 'prompt', outcome: 'saved' })).toBeGreaterThan(0);
  });
});

describe.each(databaseKinds)('GET /metrics in open mode on %s', (kind) => {
  it('is open on the main server without a key, and not there once [Metrics] PORT moves it to a port of its own', async () => {
    const open = await createTestApp(kind, testConfig());
    const moved = await createTestApp(kind, testConfig('[Metrics]\nPORT=0\n'));
    try {
      const answer = await open.app.fetch('http://127.0.0.1/metrics');
      expect(answer.status).toBe(200);
      expect(parsePrometheusText(await answer.text()).types.get('callboard_history_pending_rows')).toBe('gauge');
      const missing = await moved.app.fetch('http://127.0.0.1/metrics');
      expect(missing.status).toBe(404);
    } finally {
      await open.dispose();
      await moved.dispose();
    }
    }, 120_000);
});

describe('[Metrics] PORT in the server process', () => {
  let workDir: string;
  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'callboard-metrics-'));
  });
  afterAll(() => rm(workDir, { recursive: true, force: true }));

  it('serves /metrics only on its own port, without a key, and closes it on SIGTERM', async () => {
    const server = await startServerProcess({ cwd: workDir, env: { CALLBOARD_DATABASE__DATA_DIR: join(workDir, 'data'), CALLBOARD_METRICS__PORT: '0' } });
    try {
      const logged = server.output.map((line) => /"url":"([^"]+)".*metrics are served on a port of their own/.exec(line)?.[1]).find(Boolean);
      expect(logged).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const metricsUrl = logged!;
      const answer = await fetch(metricsUrl);
      expect(answer.status).toBe(200);
      const metrics = parsePrometheusText(await answer.text());
      expect(metrics.types.get('callboard_calls_total')).toBe('counter');
      expect(metrics.value('process_cpu_user_seconds_total')).toBeGreaterThan(0);
      expect((await fetch(metricsUrl.replace('/metrics', '/graphql'))).status).toBe(404);
      expect((await fetch(server.url.replace('/graphql', '/metrics'))).status).toBe(404);
      expect(await server.stop('SIGTERM')).toBe(0);
      await expect(fetch(metricsUrl)).rejects.toThrow();
    } finally {
      if (server.child.exitCode === null) await server.stop('SIGKILL');
    }
    }, 120_000);
});
