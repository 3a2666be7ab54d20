import { setTimeout as delay } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion, embeddingsResponse, type FakeResponse } from '../support/fake-openai.ts';
import { failure, historyRow, useLlmHarness, user } from './harness.ts';

const answer = (content: string): FakeResponse => ({ json: chatCompletion({ content, model: 'gpt-4o-mini', usage: { prompt_tokens: 3, completion_tokens: 1 } }) });
const failing = (status: number, headers?: Record<string, string>): FakeResponse => ({ error: { status, message: `scripted ${status}` }, ...(headers ? { headers } : {}) });

describe.each(databaseKinds)('upstream failures and load on %s', (kind) => {
  const harness = useLlmHarness(kind);

  describe('retries', () => {
    it('waits as Retry-After asks after a 429, then succeeds on the second attempt', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [failing(429, { 'Retry-After': '2', 'x-request-id': 'req_limited' }), answer('at last')]);

      const result = await llm.sendMessage({ messages: user('hello') });

      expect(result.message.content).toBe('at last');
      expect(result.attempts).toBe(2);
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
      expect(harness.waits).toEqual([2000]);
      const row = await historyRow(harness, result.call.id);
      expect(row).toMatchObject({ status: 'SUCCESS', attemptCount: 2, errorCode: null });
      expect(row.attempts).toMatchObject([
        { number: 1, httpStatus: 429, errorCode: 'PROVIDER_RATE_LIMITED', waitMs: 2000, requestId: 'req_limited' },
        { number: 2, httpStatus: 200, errorCode: null, waitMs: null, requestId: expect.stringMatching(/^req_/) },
      ]);
    });

    it('honours retry-after-ms before Retry-After', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [failing(429, { 'retry-after-ms': '1500', 'retry-after': '9' }), answer('ok')]);

      await llm.sendMessage({ messages: user('hello') });

      expect(harness.waits).toEqual([1500]);
    });

    it.each([
      [400, 'PROVIDER_BAD_REQUEST'],
      [401, 'PROVIDER_AUTH_FAILED'],
      [403, 'PROVIDER_AUTH_FAILED'],
      [404, 'PROVIDER_NOT_FOUND'],
      [422, 'PROVIDER_BAD_REQUEST'],
    ])('does not retry a %i (%s)', async (status, code) => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [failing(status), answer('too late')]);

      const error = await failure(llm.sendMessage({ messages: user('hello') }));

      expect(error.code).toBe(code);
      expect(error.message).toContain(`scripted ${status}`);
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(harness.waits).toEqual([]);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: code, attemptCount: 1 });
      expect(row.attempts).toMatchObject([{ number: 1, httpStatus: status, errorCode: code, waitMs: null }]);
    });

    it.each([408, 409, 500, 502, 503, 504])('retries a %i, then succeeds', async (status) => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [failing(status), answer('recovered')]);

      const result = await llm.sendMessage({ messages: user('hello') });

      expect(result.message.content).toBe('recovered');
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
      expect(harness.waits).toHaveLength(1);
    });

    it('gives up on repeated 500s after MAX_ATTEMPTS with RETRY_EXHAUSTED', async () => {
      const { llm } = await harness.start({ openai: { MAX_ATTEMPTS: 3 } });
      harness.fake.script('chat', failing(500));

      const error = await failure(llm.sendMessage({ messages: user('hello') }));

      expect(error.code).toBe('RETRY_EXHAUSTED');
      expect(error.details).toMatchObject({ attempts: 3, lastStatus: 500, lastErrorCode: 'PROVIDER_UNAVAILABLE' });
      expect(harness.fake.requestsTo('chat')).toHaveLength(3);
      expect(harness.waits).toHaveLength(2);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'RETRY_EXHAUSTED', attemptCount: 3 });
      expect(row.attempts.map(({ number, httpStatus, errorCode }) => ({ number, httpStatus, errorCode }))).toEqual([
        { number: 1, httpStatus: 500, errorCode: 'PROVIDER_UNAVAILABLE' },
        { number: 2, httpStatus: 500, errorCode: 'PROVIDER_UNAVAILABLE' },
        { number: 3, httpStatus: 500, errorCode: 'PROVIDER_UNAVAILABLE' },
      ]);
    });

    it('times out each attempt after TIMEOUT and retries up to MAX_ATTEMPTS', async () => {
      const { llm } = await harness.start({ openai: { MAX_ATTEMPTS: 3, TIMEOUT: 0.3 } });
      harness.fake.script('chat', { hang: true });

      const started = performance.now();
      const error = await failure(llm.sendMessage({ messages: user('anyone there?') }));
      const elapsed = performance.now() - started;

      expect(error.code).toBe('RETRY_EXHAUSTED');
      expect(error.details).toMatchObject({ attempts: 3, lastStatus: null, lastErrorCode: 'PROVIDER_TIMEOUT' });
      expect(harness.fake.requestsTo('chat')).toHaveLength(3);
      expect(elapsed).toBeGreaterThanOrEqual(850);
      expect(elapsed).toBeLessThan(3000);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'RETRY_EXHAUSTED', attemptCount: 3 });
      expect(row.attempts.map((attempt) => [attempt.httpStatus, attempt.errorCode])).toEqual([
        [null, 'PROVIDER_TIMEOUT'],
        [null, 'PROVIDER_TIMEOUT'],
        [null, 'PROVIDER_TIMEOUT'],
      ]);
      for (const attempt of row.attempts) expect(attempt.latencyMs).toBeGreaterThanOrEqual(280);
    });

    it('waits 1, 5, 25 s, then the 60 s cap, on repeated 503s', async () => {
      const { llm } = await harness.start({
        openai: { WAITING_TIME: 1, EXPONENTIAL_BACKOFF_FACTOR: 5, MAX_WAITING_TIME: 60, BACKOFF_JITTER: 0, MAX_ATTEMPTS: 5 },
      });
      harness.fake.script('chat', failing(503));

      const error = await failure(llm.sendMessage({ messages: user('hello') }));

      expect(error.code).toBe('RETRY_EXHAUSTED');
      expect(harness.fake.requestsTo('chat')).toHaveLength(5);
      expect(harness.waits).toEqual([1000, 5000, 25000, 60000]);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row.attempts.map((attempt) => attempt.waitMs)).toEqual([1000, 5000, 25000, 60000, null]);
    });

    it('shortens the waits by BACKOFF_JITTER times a random draw', async () => {
      const { llm } = await harness.start({
        openai: { WAITING_TIME: 1, EXPONENTIAL_BACKOFF_FACTOR: 5, MAX_WAITING_TIME: 60, BACKOFF_JITTER: 0.2, MAX_ATTEMPTS: 5 },
        random: () => 1,
      });
      harness.fake.script('chat', failing(503));

      await failure(llm.sendMessage({ messages: user('hello') }));

      expect(harness.waits).toEqual([800, 4000, 20000, 48000]);
    });

    it('retries embeddings like chat', async () => {
      const { llm } = await harness.start({ openai: { BACKOFF_JITTER: 0 } });
      harness.fake.script('embeddings', [
        failing(503),
        { json: embeddingsResponse({ inputs: ['text'], model: 'text-embedding-3-small', dimensions: 8 }) },
      ]);

      const result = await llm.embed({ texts: ['text'] });

      expect(result.attempts).toBe(2);
      expect(harness.fake.requestsTo('embeddings')).toHaveLength(2);
      expect(harness.waits).toEqual([1000]);
      const row = await historyRow(harness, result.call.id);
      expect(row.attempts.map((attempt) => attempt.httpStatus)).toEqual([503, 200]);
    });

    it("does not retry after the caller's abort", async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', { hang: true });
      const controller = new AbortController();

      const pending = failure(llm.sendMessage({ messages: user('never mind'), signal: controller.signal }));
      await expect.poll(() => harness.fake.requestsTo('chat').length).toBe(1);
      controller.abort();
      const error = await pending;

      expect(error.code).toBe('ABORTED');
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(harness.waits).toEqual([]);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'ABORTED', attemptCount: 1 });
    });
  });

  describe('the deadline and the limits of one call', () => {
    it('ends a call at CALL_DEADLINE with DEADLINE_EXCEEDED, its cut attempt recorded with its error', async () => {
      const { llm } = await harness.start({ openai: { CALL_DEADLINE: 0.4, TIMEOUT: 60, MAX_ATTEMPTS: 5 } });
      harness.fake.script('chat', { hang: true });

      const started = performance.now();
      const error = await failure(llm.sendMessage({ messages: user('anyone there?') }));
      const elapsed = performance.now() - started;

      expect(error.code).toBe('DEADLINE_EXCEEDED');
      expect(error.details).toMatchObject({ deadlineSeconds: 0.4, attempts: 1, lastErrorCode: 'PROVIDER_TIMEOUT', lastStatus: null });
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(elapsed).toBeGreaterThanOrEqual(350);
      expect(elapsed).toBeLessThan(3000);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'DEADLINE_EXCEEDED', attemptCount: 1 });
      expect(row.attempts).toMatchObject([{ number: 1, httpStatus: null, errorCode: 'PROVIDER_TIMEOUT', waitMs: null }]);
      expect(row.attempts[0]!.latencyMs).toBeGreaterThanOrEqual(350);
    });

    it('takes deadlineSeconds, timeoutSeconds and maxAttempts from the caller, each bounding its call', async () => {
      const { llm } = await harness.start({ openai: { BACKOFF_JITTER: 0, WAITING_TIME: 0.1 } });
      harness.fake.script('chat', { hang: true });

      const error = await failure(llm.sendMessage({ messages: user('quick or nothing'), timeoutSeconds: 0.2, maxAttempts: 2 }));
      expect(error.code).toBe('RETRY_EXHAUSTED');
      expect(harness.fake.requestsTo('chat')).toHaveLength(2);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row.attempts.map((attempt) => [attempt.errorCode, attempt.waitMs])).toEqual([
        ['PROVIDER_TIMEOUT', 100],
        ['PROVIDER_TIMEOUT', null],
      ]);

      harness.fake.reset();
      harness.fake.script('embeddings', { hang: true });
      const embedding = await failure(llm.embed({ texts: ['slow'], deadlineSeconds: 0.3 }));
      expect(embedding.code).toBe('DEADLINE_EXCEEDED');
      expect(embedding.details).toMatchObject({ deadlineSeconds: 0.3, attempts: 1 });
      expect((await historyRow(harness, embedding.details.callId as string)).attempts).toMatchObject([{ errorCode: 'PROVIDER_TIMEOUT' }]);
    });

    it('ends a follower waiting on the same request at its own, shorter deadline', async () => {
      const { llm } = await harness.start({ openai: { CALL_DEADLINE: 2, MAX_ATTEMPTS: 1 } });
      harness.fake.script('chat', { hang: true });

      const leader = failure(llm.sendMessage({ messages: user('shared'), cache: 'USE' }));
      await expect.poll(() => harness.fake.requestsTo('chat').length).toBe(1);
      const follower = await failure(llm.sendMessage({ messages: user('shared'), cache: 'USE', deadlineSeconds: 0.2 }));
      expect(follower.code).toBe('DEADLINE_EXCEEDED');
      expect((await leader).code).toBe('PROVIDER_TIMEOUT');
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      const leaderRow = await historyRow(harness, (await leader).details.callId as string);
      expect(leaderRow).toMatchObject({ errorCode: 'PROVIDER_TIMEOUT', attemptCount: 1 });
    });

    it.each([
      ['deadlineSeconds', { deadlineSeconds: 301 }, 'CALL_DEADLINE (300)'],
      ['timeoutSeconds', { timeoutSeconds: 61 }, 'TIMEOUT (60)'],
      ['maxAttempts', { maxAttempts: 6 }, 'MAX_ATTEMPTS (5)'],
      ['maxAttempts', { maxAttempts: 0 }, 'MAX_ATTEMPTS (5)'],
      ['deadlineSeconds', { deadlineSeconds: -1 }, 'CALL_DEADLINE (300)'],
    ])('refuses a %s beyond the configuration with BAD_USER_INPUT naming it', async (field, limits, limit) => {
      const { llm } = await harness.start();

      const chat = await failure(llm.sendMessage({ messages: user('hello'), ...limits }));
      const embedding = await failure(llm.embed({ texts: ['hello'], ...limits }));

      for (const error of [chat, embedding]) {
        expect(error.code).toBe('BAD_USER_INPUT');
        expect(error.details.field).toBe(field);
        expect(error.message).toContain(`${field} must be`);
        expect(error.message).toContain(`at most ${limit}`);
      }
      expect(harness.fake.requests).toHaveLength(0);
    });

    it('fails fast with PROVIDER_RATE_LIMITED when Retry-After is longer than MAX_WAITING_TIME', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [failing(429, { 'Retry-After': '120', 'x-request-id': 'req_wait' }), answer('too soon')]);

      const error = await failure(llm.sendMessage({ messages: user('hello') }));

      expect(error.code).toBe('PROVIDER_RATE_LIMITED');
      expect(error.details).toMatchObject({ retryAfterSeconds: 120, attempts: 1, status: 429 });
      expect(error.message).toContain('MAX_WAITING_TIME (60 s)');
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(harness.waits).toEqual([]);
      const row = await historyRow(harness, error.details.callId as string);
      expect(row).toMatchObject({ status: 'ERROR', errorCode: 'PROVIDER_RATE_LIMITED', attemptCount: 1 });
      expect(row.attempts).toMatchObject([{ number: 1, httpStatus: 429, errorCode: 'PROVIDER_RATE_LIMITED', waitMs: null, requestId: 'req_wait' }]);
    });

    it('fails fast with PROVIDER_RATE_LIMITED when Retry-After would end after the deadline', async () => {
      const { llm } = await harness.start();
      harness.fake.script('chat', [failing(429, { 'Retry-After': '30' }), answer('too late')]);

      const error = await failure(llm.sendMessage({ messages: user('hello'), deadlineSeconds: 10 }));

      expect(error.code).toBe('PROVIDER_RATE_LIMITED');
      expect(error.details).toMatchObject({ retryAfterSeconds: 30 });
      expect(error.message).toContain("the time left before the call's deadline");
      expect(harness.fake.requestsTo('chat')).toHaveLength(1);
      expect(harness.waits).toEqual([]);
    });
  });

  describe('the concurrency limit', () => {
    it.each([
      [2, 2],
      [0, 6],
    ])('with MAX_CONCURRENT_MODEL_CALLS=%i, 6 concurrent calls have at most %i requests open at once', async (limit, expectedMost) => {
      const { llm } = await harness.start({ openai: { MAX_CONCURRENT_MODEL_CALLS: limit } });
      let open = 0;
      let mostOpen = 0;
      harness.fake.script('chat', async (request) => {
        open += 1;
        mostOpen = Math.max(mostOpen, open);
        await delay(60);
        open -= 1;
        return { json: chatCompletion({ content: 'slow answer', model: request.body.model }) };
      });

      const results = await Promise.all(Array.from({ length: 6 }, (_unused, index) => llm.sendMessage({ messages: user(`question ${index}`), cache: 'BYPASS' })));

      expect(results.map((result) => result.cacheStatus)).toEqual(Array(6).fill('BYPASS'));
      expect(harness.fake.requestsTo('chat')).toHaveLength(6);
      expect(mostOpen).toBe(expectedMost);
    });
  });
});
