import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultChatResponse, startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';
import { startServerProcess } from '../support/server-process.ts';

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: number | string; boolValue?: boolean; arrayValue?: { values: { stringValue?: string }[] } };
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpAttribute[];
  status?: { code?: number };
}

interface OtlpExport {
  resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}

const spanKind = { server: 2, client: 3 };

/** An attribute's value as a plain value. */
function attribute(attributes: OtlpAttribute[], key: string): unknown {
  const value = attributes.find((candidate) => candidate.key === key)?.value;
  if (!value) return undefined;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.arrayValue) return value.arrayValue.values.map((item) => item.stringValue);
  return value.stringValue ?? value.boolValue;
}

/** A fake OTLP collector: POST /v1/traces with OTLP/JSON bodies, kept as they came. */
async function startCollector() {
  const exports: OtlpExport[] = [];
  const requests: { method: string; path: string; contentType: string }[] = [];
  const server: Server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      requests.push({ method: request.method!, path: request.url!, contentType: request.headers['content-type'] ?? '' });
      if (request.method === 'POST' && request.url === '/v1/traces') exports.push(JSON.parse(body) as OtlpExport);
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    exports,
    requests,
    spans: () => exports.flatMap((exported) => exported.resourceSpans.flatMap((resource) => resource.scopeSpans.flatMap((scope) => scope.spans))),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const sendMessage = (content: string) => JSON.stringify({ query: `mutation Traced { sendMessage(input: { messages: [{ role: USER, content: "${content}" }], cache: BYPASS }) { call { id } } }` });

describe('OpenTelemetry traces of the server process', () => {
  let workDir: string;
  let fake: FakeOpenAI;
  let collector: Awaited<ReturnType<typeof startCollector>>;

  beforeAll(async () => {
    [workDir, fake, collector] = await Promise.all([mkdtemp(join(tmpdir(), 'callboard-tracing-')), startFakeOpenAI(), startCollector()]);
  });

  afterAll(async () => {
    await fake?.close();
    await collector?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  const envOf = (name: string, extra: Record<string, string> = {}) => ({
    CALLBOARD_DATABASE__DATA_DIR: join(workDir, name),
    CALLBOARD_OPENAI__BASE_URL: fake.openaiBaseURL,
    CALLBOARD_OPENAI__MAX_ATTEMPTS: '3',
    CALLBOARD_OPENAI__WAITING_TIME: '0.01',
    OPENAI_API_KEY: 'sk-tracing-SECRET',
    ...extra,
  });

  it('sends a SERVER span per request and a CLIENT span per upstream attempt, in the caller\'s trace, when OTEL_EXPORTER_OTLP_ENDPOINT is set', async () => {
    const server = await startServerProcess({ cwd: workDir, env: envOf('on', { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_SERVICE_NAME: 'callboard-under-test' }) });
    expect(server.output.join('\n')).toContain(`"tracing":"${collector.url}/v1/traces"`);
    fake.script('chat', (request) => (request.callNumber === 1 ? { error: { status: 500, message: 'upstream broke' } } : defaultChatResponse(request)));
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpanId = '00f067aa0ba902b7';
    const traced = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'traced-1', traceparent: `00-${traceId}-${callerSpanId}-01` },
      body: sendMessage('trace me'),
    });
    const callId = ((await traced.json()) as { data: { sendMessage: { call: { id: string } } } }).data.sendMessage.call.id;
    const untraced = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'fresh-1', traceparent: 'not-a-traceparent' }, body: '{"query":"{ __typename }"}' });
    expect(untraced.status).toBe(200);
    // Shutdown sends what the batch processor still holds.
    expect(await server.stop('SIGTERM')).toBe(0);

    expect(collector.requests.every((request) => request.method === 'POST' && request.path === '/v1/traces' && request.contentType.startsWith('application/json'))).toBe(true);
    expect(attribute(collector.exports[0]!.resourceSpans[0]!.resource.attributes, 'service.name')).toBe('callboard-under-test');
    const spans = collector.spans();
    const requestSpan = spans.find((span) => attribute(span.attributes, 'callboard.request_id') === 'traced-1')!;
    expect(requestSpan).toMatchObject({ traceId, parentSpanId: callerSpanId, kind: spanKind.server, name: 'POST /graphql' });
    expect(attribute(requestSpan.attributes, 'http.request.method')).toBe('POST');
    expect(attribute(requestSpan.attributes, 'http.route')).toBe('/graphql');
    expect(attribute(requestSpan.attributes, 'http.response.status_code')).toBe(200);
    expect(attribute(requestSpan.attributes, 'callboard.operation')).toBe('mutation Traced');
    expect(attribute(requestSpan.attributes, 'callboard.call_ids')).toEqual([callId]);

    const attempts = spans.filter((span) => span.parentSpanId === requestSpan.spanId).sort((a, b) => Number(attribute(a.attributes, 'callboard.attempt')) - Number(attribute(b.attributes, 'callboard.attempt')));
    expect(attempts.map((span) => [span.kind, span.traceId, span.name, attribute(span.attributes, 'callboard.attempt'), attribute(span.attributes, 'http.response.status_code'), attribute(span.attributes, 'callboard.call_id')])).toEqual([
      [spanKind.client, traceId, 'chat gpt-4o-mini', 1, 500, callId],
      [spanKind.client, traceId, 'chat gpt-4o-mini', 2, 200, callId],
    ]);
    expect(attempts[0]!.status?.code).toBe(2);
    // Each attempt lies within its request, and the second after the first.
    for (const span of attempts) {
      expect(BigInt(span.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(requestSpan.startTimeUnixNano));
      expect(BigInt(span.endTimeUnixNano)).toBeLessThanOrEqual(BigInt(requestSpan.endTimeUnixNano));
    }
    expect(BigInt(attempts[1]!.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(attempts[0]!.endTimeUnixNano));

    // A malformed traceparent starts a trace of its own.
    const fresh = spans.find((span) => attribute(span.attributes, 'callboard.request_id') === 'fresh-1')!;
    expect(fresh.parentSpanId ?? '').toBe('');
    expect(fresh.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(fresh.traceId).not.toBe(traceId);
    expect(JSON.stringify(collector.exports)).not.toContain('sk-tracing-SECRET');
  }, 120_000);

  it('sends nothing and loads nothing of OpenTelemetry without OTEL_EXPORTER_OTLP_ENDPOINT', async () => {
    const before = collector.requests.length;
    const server = await startServerProcess({ cwd: workDir, env: envOf('off') });
    expect(server.output.join('\n')).toContain('"tracing":null');
    const answer = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: sendMessage('not traced') });
    expect(answer.status).toBe(200);
    expect(await server.stop('SIGTERM')).toBe(0);
    // Stopped: anything it had buffered would have been sent by now.
    expect(collector.requests.length).toBe(before);
    expect(server.output.join('\n')).not.toContain('tracing: sending');
  }, 120_000);
});
