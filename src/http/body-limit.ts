import type { Plugin } from 'graphql-yoga';
import { refusal } from './refusal.ts';

/** The refusal of a body past the bound: HTTP 413, and the connection closed so the rest is not read. */
function tooLarge(fetchAPI: { Response: typeof Response }, url: URL, maxBytes: number, declaredBytes?: number): Response {
  const message =
    declaredBytes === undefined
      ? `The request body is larger than ${maxBytes} bytes ([Limits] MAX_BODY_BYTES); it was not read further.`
      : `The request body has ${declaredBytes} bytes; at most ${maxBytes} are allowed ([Limits] MAX_BODY_BYTES).`;
  const details = { limit: 'MAX_BODY_BYTES', max: maxBytes, ...(declaredBytes === undefined ? {} : { actual: declaredBytes }) };
  return refusal(fetchAPI, url, 413, { code: 'PAYLOAD_TOO_LARGE', message, details }, { connection: 'close' });
}

/**
 * Refuses a request body past `maxBytes` ([Limits] MAX_BODY_BYTES) before Yoga parses it: one that
 * declares a larger `content-length` at once, before a byte of it is read, and one sent without a
 * length (chunked) as soon as the bytes counted pass the bound. A declared length needs no counting:
 * Node's HTTP parser never hands on more bytes than it declares. Replaces Yoga's own
 * `maxRequestBodySize`, whose refusal carries no Callboard code.
 */
export function useBodyLimit(maxBytes: number): Plugin {
  return {
    onRequest({ request, url, endResponse, fetchAPI }) {
      const declared = request.headers.get('content-length');
      if (declared === null) return;
      // Node's parser refuses a malformed length itself; a fetch caller's is read as unknown and counted.
      if (/^\d+$/.test(declared) && Number(declared) > maxBytes) endResponse(tooLarge(fetchAPI, url, maxBytes, Number(declared)));
    },
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      if (requestParser === undefined || request.body === null || /^\d+$/.test(request.headers.get('content-length') ?? '')) return;
      const parse = requestParser;
      setRequestParser(async (original) => {
        let exceeded = false;
        let bytes = 0;
        // A native stream needs the native TransformStream (graphql-yoga issue 4583, as Yoga's own limit does).
        const Transform = original.body instanceof ReadableStream ? globalThis.TransformStream : fetchAPI.TransformStream;
        const counted = original.body!.pipeThrough(
          new Transform<Uint8Array, Uint8Array>({
            transform(chunk, controller) {
              bytes += chunk.byteLength;
              if (bytes > maxBytes) {
                exceeded = true;
                controller.error(new Error('request body too large'));
                return;
              }
              controller.enqueue(chunk);
            },
          }),
        );
        const limited = new fetchAPI.Request(original.url, {
          method: original.method,
          headers: original.headers,
          signal: original.signal,
          body: counted,
          // @ts-expect-error Node's fetch needs it for a streamed body; the DOM types do not know it.
          duplex: 'half',
        });
        try {
          return await parse(limited);
        } catch (error) {
          if (exceeded) return tooLarge(fetchAPI, new URL(original.url), maxBytes);
          throw error;
        }
      });
    },
  };
}
