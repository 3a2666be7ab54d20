// Types only: nothing of OpenTelemetry is loaded unless tracing is on (see startTracing).
import type { Context, Span, Tracer } from '@opentelemetry/api';
import type { Logger } from '../logger.ts';
import type { RequestLog } from './request-log.ts';

/** Sends one span per request, and one child span per upstream attempt of its calls, to an OTLP collector. */
export interface Tracing {
  /** Where the spans go (OTLP over HTTP, JSON), without the credentials it may hold. */
  url: string;
  /** Spans of a request whose response is finished: made after the fact, from the times the request and its attempts kept. */
  record(log: RequestLog, outcome: { status: number; durationMs: number; tenant: string | null }): void;
  /** Sends the spans still buffered and stops; at most `timeoutMs`. */
  shutdown(timeoutMs?: number): Promise<void>;
}

let modulesLoaded = false;

/** True once the OpenTelemetry packages were imported: never while OTEL_EXPORTER_OTLP_ENDPOINT is unset. */
export function tracingModulesLoaded(): boolean {
  return modulesLoaded;
}

/**
 * The OTLP traces URL the standard variables name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, or
 * OTEL_EXPORTER_OTLP_ENDPOINT followed by /v1/traces; null when neither is set (or OTEL_SDK_DISABLED=true).
 */
export function tracesUrlOf(env: Record<string, string | undefined>): string | null {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return null;
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (traces) return traces;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  return base ? `${base.replace(/\/+$/, '')}/v1/traces` : null;
}

const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const maxTraceHeaderCharacters = 512;

/**
 * Off and free unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then the SDK is
 * imported (dynamically: nothing of it is loaded otherwise) with a batch processor and the OTLP HTTP exporter.
 * OTEL_SERVICE_NAME names the service (default "callboard").
 */
export async function startTracing(env: Record<string, string | undefined>, logger: Logger): Promise<Tracing | null> {
  const url = tracesUrlOf(env);
  if (url === null) return null;
  let shown: string;
  try {
    const parsed = new URL(url);
    parsed.username = parsed.password = '';
    shown = parsed.href;
  } catch {
    throw new Error(`OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is not a URL: ${url.slice(0, 200)}`);
  }
  const [api, { BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }, semconv] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/semantic-conventions'),
  ]);
  modulesLoaded = true;
  const { SpanKind, SpanStatusCode, ROOT_CONTEXT, trace } = api;
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [semconv.ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME?.trim() || 'callboard' }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }))],
  });
  const tracer: Tracer = provider.getTracer('callboard');

  /** The caller's trace, when its `traceparent` is valid (W3C Trace Context); otherwise a new one. */
  function parentOf(log: RequestLog): Context {
    const header = log.traceparent?.trim().toLowerCase();
    if (!header || header.length > maxTraceHeaderCharacters) return ROOT_CONTEXT;
    const match = traceparentPattern.exec(header);
    // Version ff is invalid; version 00 has exactly four parts (later versions may add more).
    if (!match || match[1] === 'ff' || (match[1] === '00' && match[5] !== undefined)) return ROOT_CONTEXT;
    const spanContext = {
      traceId: match[2]!,
      spanId: match[3]!,
      traceFlags: Number.parseInt(match[4]!, 16) & 0xff,
      isRemote: true,
      ...(log.tracestate && log.tracestate.length <= maxTraceHeaderCharacters ? { traceState: api.createTraceState(log.tracestate) } : {}),
    };
    return api.isSpanContextValid(spanContext) ? trace.setSpanContext(ROOT_CONTEXT, spanContext) : ROOT_CONTEXT;
  }

  logger.info({ url: shown }, 'tracing: sending a span per request and per upstream attempt over OTLP');
  return {
    url: shown,
    record(log, outcome) {
      const requestSpan: Span = tracer.startSpan(
        log.route ? `${log.method} ${log.route}` : log.method,
        {
          kind: SpanKind.SERVER,
          startTime: log.startedAtMs,
          attributes: {
            [semconv.ATTR_HTTP_REQUEST_METHOD]: log.method,
            [semconv.ATTR_URL_PATH]: log.path,
            ...(log.route ? { [semconv.ATTR_HTTP_ROUTE]: log.route } : {}),
            [semconv.ATTR_HTTP_RESPONSE_STATUS_CODE]: outcome.status,
            'callboard.request_id': log.id,
            ...(log.operation ? { 'callboard.operation': log.operation } : {}),
            ...(outcome.tenant ? { 'callboard.tenant': outcome.tenant } : {}),
            'callboard.call_ids': log.calls.map((call) => call.id),
          },
        },
        parentOf(log),
      );
      if (outcome.status >= 500) requestSpan.setStatus({ code: SpanStatusCode.ERROR });
      const parent = trace.setSpan(ROOT_CONTEXT, requestSpan);
      for (const call of log.calls) {
        const operation = call.kind === 'EMBEDDING' ? 'embeddings' : 'chat';
        for (const attempt of call.attempts) {
          const attemptSpan = tracer.startSpan(
            `${operation} ${call.model}`,
            {
              kind: SpanKind.CLIENT,
              startTime: attempt.startedAt,
              attributes: {
                'gen_ai.operation.name': operation,
                'gen_ai.request.model': call.model,
                'gen_ai.system': call.apiType,
                'callboard.call_id': call.id,
                'callboard.attempt': attempt.number,
                'callboard.cache_status': call.cacheStatus,
                ...(attempt.httpStatus !== null ? { [semconv.ATTR_HTTP_RESPONSE_STATUS_CODE]: attempt.httpStatus } : {}),
                ...(attempt.errorCode ? { [semconv.ATTR_ERROR_TYPE]: attempt.errorCode } : {}),
                ...(attempt.requestId ? { 'callboard.upstream_request_id': attempt.requestId } : {}),
              },
            },
            parent,
          );
          if (attempt.errorCode) attemptSpan.setStatus({ code: SpanStatusCode.ERROR, message: attempt.errorCode });
          attemptSpan.end(attempt.startedAt.getTime() + attempt.latencyMs);
        }
      }
      requestSpan.end(log.startedAtMs + outcome.durationMs);
    },
    async shutdown(timeoutMs = 5_000) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((done) => (timer = setTimeout(done, timeoutMs).unref()));
      await Promise.race([provider.shutdown().catch((error: unknown) => logger.warn({ err: error }, 'tracing: spans could not be sent at shutdown')), timedOut]);
      clearTimeout(timer);
    },
  };
}
