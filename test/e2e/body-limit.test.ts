import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';

const maxBytes = 1000;

/** A valid GraphQL request of exactly `bytes` bytes: the query padded with spaces. */
function bodyOf(bytes: number): string {
  const start = '{"query":"{ providers { apiType } }';
  const end = '"}';
  return `${start}${' '.repeat(bytes - start.length - end.length)}${end}`;
}

/** The body as a stream of 100-byte pieces: a fetch caller's body without a length, as chunked encoding sends it. */
function streamOf(text: string): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + 100));
      offset += 100;
    },
  });
}

describe('[Limits] MAX_BODY_BYTES', () => {
  let testApp: TestApp;

  beforeAll(async () => {
    testApp = await createTestApp('pglite', testConfig(`[Limits]\nMAX_BODY_BYTES=${maxBytes}\n`));
  });

  afterAll(async () => {
    await testApp?.dispose();
  });

  const post = (body: BodyInit, headers: Record<string, string> = {}) =>
    testApp.app.fetch('http://callboard/graphql', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body, duplex: 'half' } as RequestInit);

  it('serves a body of exactly MAX_BODY_BYTES, with or without a length', async () => {
    for (const body of [bodyOf(maxBytes), streamOf(bodyOf(maxBytes))]) {
      const response = await post(body);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ data: { providers: expect.any(Array) } });
    }
  });

  it('refuses one byte more by its content-length with 413 PAYLOAD_TOO_LARGE, naming the limit and the size', async () => {
    const response = await post(bodyOf(maxBytes + 1), { 'content-length': String(maxBytes + 1) });
    expect(response.status).toBe(413);
    expect(response.headers.get('connection')).toBe('close');
    const answer = (await response.json()) as { errors: { message: string; extensions: unknown }[] };
    expect(answer.errors[0]!.extensions).toEqual({ code: 'PAYLOAD_TOO_LARGE', details: { limit: 'MAX_BODY_BYTES', max: maxBytes, actual: maxBytes + 1 } });
    expect(answer.errors[0]!.message).toMatch(/MAX_BODY_BYTES/);
  });

  it('refuses one byte more sent without a length once it has counted past the bound', async () => {
    const response = await post(streamOf(bodyOf(maxBytes + 1)));
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ errors: [{ extensions: { code: 'PAYLOAD_TOO_LARGE', details: { limit: 'MAX_BODY_BYTES', max: maxBytes } } }] });
  });

  it('still answers a malformed JSON body of an allowed size as a bad request', async () => {
    const response = await post(streamOf('{"query": '));
    expect(response.status).toBe(400);
  });
});
