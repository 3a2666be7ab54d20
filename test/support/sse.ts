import { parseSseEvent } from '../../src/client/sse.ts';

/** One result of a subscription, as GraphQL over SSE sends it in a `next` event. */
export interface StreamedResult<TData = any> {
  data?: TData | null;
  errors?: { message: string; extensions?: { code?: string; details?: Record<string, unknown> } }[];
}

/** A GraphQL subscription read over Server-Sent Events, the way a dashboard's EventSource reads it. */
export interface EventStream<TData = any> {
  status: number;
  contentType: string | null;
  /** The body of an answer that is no event stream (a refusal at the door). */
  text: string | null;
  /** The next `next` event's result; null once the server sent `complete` or ended the stream. */
  next(): Promise<StreamedResult<TData> | null>;
  /** Goes away, as a closed browser tab does. */
  close(): Promise<void>;
}

type Fetch = (url: string, init: RequestInit) => Response | Promise<Response>;

/**
 * Subscribes with POST /graphql and `accept: text/event-stream` (Yoga's GraphQL over SSE, "distinct
 * connections" mode) through `fetch`: the global one over real HTTP, or `app.fetch`. Comments (the
 * server's keep-alive pings) are skipped.
 */
export async function subscribe<TData = any>(
  fetch: Fetch,
  url: string,
  request: { query: string; variables?: Record<string, unknown> },
  headers: Record<string, string> = {},
): Promise<EventStream<TData>> {
  const abort = new AbortController();
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
    body: JSON.stringify(request),
    signal: abort.signal,
  });
  const contentType = response.headers.get('content-type');
  if (!contentType?.startsWith('text/event-stream') || !response.body) {
    return { status: response.status, contentType, text: await response.text(), next: async () => null, close: async () => {} };
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let ended = false;
  const next = async (): Promise<StreamedResult<TData> | null> => {
    for (;;) {
      const boundary = buffer.indexOf('\n\n');
      if (boundary >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const { event, data } = parseSseEvent(block);
        if (event === 'complete') {
          ended = true;
          return null;
        }
        if (event === 'next') return JSON.parse(data ?? '') as StreamedResult<TData>;
        continue;
      }
      if (ended) return null;
      const chunk = await reader.read();
      if (chunk.done) {
        ended = true;
        return null;
      }
      buffer += decoder.decode(chunk.value, { stream: true });
    }
  };
  return {
    status: response.status,
    contentType,
    text: null,
    next,
    close: async () => {
      ended = true;
      await reader.cancel().catch(() => {});
      abort.abort();
    },
  };
}
