import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import type { GraphQLFormattedError } from 'graphql';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { graphql } from '../gql/index.ts';
import { createTestApp, testConfig, type GraphQLResponse, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

const apiKey = 'sk-e2e-SECRET-42';
const stackFrame = /\bat .*[.](ts|js|mjs|cjs):\d+/;

const SendMessageMutation = graphql(`
  mutation ApiErrorsSendMessage($input: SendMessageInput!) {
    sendMessage(input: $input) {
      message {
        content
      }
      call {
        id
      }
    }
  }
`);

const SendTemplatedMessageMutation = graphql(`
  mutation ApiErrorsSendTemplatedMessage($input: SendTemplatedMessageInput!) {
    sendTemplatedMessage(input: $input) {
      message {
        content
      }
    }
  }
`);

const CallsQuery = graphql(`
  query ApiErrorsCalls($first: Int, $after: String, $filter: CallFilter) {
    calls(first: $first, after: $after, filter: $filter) {
      totalCount
      edges {
        node {
          id
          status
          errorCode
          errorMessage
        }
      }
    }
  }
`);

const CallQuery = graphql(`
  query ApiErrorsCall($id: ID!) {
    call(id: $id) {
      id
      status
      errorCode
      errorMessage
      attemptCount
      attempts {
        number
        httpStatus
        errorCode
        errorMessage
        waitMs
      }
      requestBody
      responseBody
    }
  }
`);

const ForceDefaultValueMutation = graphql(`
  mutation ApiErrorsForceDefaultValue($key: String!, $value: String!) {
    forceDefaultValue(key: $key, value: $value) {
      key
      value
    }
  }
`);

const ForceApiTypeMutation = graphql(`
  mutation ApiErrorsForceApiType($apiType: String!) {
    forceApiType(apiType: $apiType) {
      key
      value
    }
  }
`);

const hello = [{ role: 'USER' as const, content: 'Hello there' }];

describe.each(databaseKinds)('errors a client can meet, on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let timeoutApp: TestApp;
  /** Every response body of this describe, to prove that the API key never appears in one. */
  const bodies: string[] = [];

  async function execute<TResult, TVariables>(app: TestApp, document: TypedDocumentNode<TResult, TVariables>, variables?: TVariables) {
    const result = await app.execute(document, variables);
    bodies.push(JSON.stringify(result));
    return result;
  }

  /** The one error of a response, checked for its code, an actionable message and the absence of internals. */
  function onlyError(result: GraphQLResponse<unknown>, code: string, message: RegExp): GraphQLFormattedError {
    expect(result.errors, JSON.stringify(result)).toHaveLength(1);
    const error = result.errors![0]!;
    expect(error.extensions?.code).toBe(code);
    expect(error.message).toMatch(message);
    expect(error.extensions).not.toHaveProperty('stacktrace');
    expect(error.extensions).not.toHaveProperty('originalError');
    expect(JSON.stringify(result)).not.toMatch(stackFrame);
    return error;
  }

  function callIdOf(error: GraphQLFormattedError): string {
    const details = error.extensions?.details as { callId?: unknown } | undefined;
    expect(details?.callId, 'extensions.details.callId').toEqual(expect.stringMatching(/^[0-9a-f-]{36}$/));
    return details!.callId as string;
  }

  /** The failed call is in the history with status ERROR and the code the caller got. */
  async function expectRecordedFailure(app: TestApp, callId: string, code: string) {
    await app.services.history.flush();
    const listed = (await execute(app, CallsQuery, { first: 100, filter: { statuses: ['ERROR'] } })).data!.calls.edges.map((edge) => edge.node);
    expect(listed.find((node) => node.id === callId)).toMatchObject({ status: 'ERROR', errorCode: code });
    const byCode = (await execute(app, CallsQuery, { first: 100, filter: { errorCodes: [code] } })).data!.calls.edges.map((edge) => edge.node.id);
    expect(byCode).toContain(callId);
    const call = (await execute(app, CallQuery, { id: callId })).data!.call;
    expect(call).toMatchObject({ id: callId, status: 'ERROR', errorCode: code });
    return call!;
  }

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    const environment = { OPENAI_API_KEY: apiKey };
    [testApp, timeoutApp] = await Promise.all([
      createTestApp(kind, testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMAX_ATTEMPTS=2\n`, environment), { sleep: async () => {} }),
      createTestApp(kind, testConfig(`[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nTIMEOUT=0.3\nMAX_ATTEMPTS=1\n`, environment)),
    ]);
  });
  afterAll(async () => {
    await Promise.all([testApp?.dispose(), timeoutApp?.dispose()]);
    await fake?.close();
  });
  beforeEach(() => fake.reset());
  afterEach(() => {
    const answered = bodies.splice(0);
    for (const body of answered) expect(body).not.toContain(apiKey);
  });

  it('BAD_USER_INPUT for a call without messages, recorded as a failed call', async () => {
    const error = onlyError(await execute(testApp, SendMessageMutation, { input: { messages: [] } }), 'BAD_USER_INPUT', /at least one message/);
    expect(fake.requestsTo('chat')).toHaveLength(0);
    await expectRecordedFailure(testApp, callIdOf(error), 'BAD_USER_INPUT');
  });

  it('BAD_USER_INPUT for a temperature out of range, naming the range and the value', async () => {
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello, temperature: 3 } });
    const error = onlyError(result, 'BAD_USER_INPUT', /temperature must be between 0 and 2, got 3/);
    expect(result.data).toBeNull();
    expect(fake.requestsTo('chat')).toHaveLength(0);
    await expectRecordedFailure(testApp, callIdOf(error), 'BAD_USER_INPUT');
  });

  it('BAD_USER_INPUT for a page larger than 100 and for a malformed cursor', async () => {
    onlyError(await execute(testApp, CallsQuery, { first: 500 }), 'BAD_USER_INPUT', /first must be between 0 and 100, got 500/);
    onlyError(await execute(testApp, CallsQuery, { first: 5, after: 'not-a-cursor' }), 'BAD_USER_INPUT', /cursor is not valid/);
    const wellFormedJunk = Buffer.from(JSON.stringify({ hello: 'world' })).toString('base64url');
    onlyError(await execute(testApp, CallsQuery, { after: wellFormedJunk }), 'BAD_USER_INPUT', /cursor is not valid/);
    onlyError(await execute(testApp, CallQuery, { id: 'not-a-call-id' }), 'BAD_USER_INPUT', /"not-a-call-id" is not a call id/);
  });

  it('BAD_USER_INPUT for forceDefaultValue of an unknown key or a bad value, and for forceApiType of an unknown type', async () => {
    onlyError(await execute(testApp, ForceDefaultValueMutation, { key: 'NOPE', value: '1' }), 'BAD_USER_INPUT', /unknown key "NOPE"; known keys: .*MODEL/);
    onlyError(await execute(testApp, ForceDefaultValueMutation, { key: 'TEMPERATURE', value: 'hot' }), 'BAD_USER_INPUT', /TEMPERATURE: expected a number, got "hot"/);
    onlyError(await execute(testApp, ForceApiTypeMutation, { apiType: 'nope' }), 'BAD_USER_INPUT', /unknown API type "nope"; registered: openai, azure, openai-compatible/);
    expect(testApp.services.overrides.list()).toEqual([]);
  });

  it('UNKNOWN_PROVIDER for an apiType nobody registered, listing the registered ones', async () => {
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello, apiType: 'nope' } });
    const error = onlyError(result, 'UNKNOWN_PROVIDER', /No provider is registered for API type "nope"; registered: openai, azure, openai-compatible/);
    await expectRecordedFailure(testApp, callIdOf(error), 'UNKNOWN_PROVIDER');
  });

  it('PROVIDER_NOT_CONFIGURED for azure without its environment, naming the missing variables', async () => {
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello, apiType: 'azure' } });
    const error = onlyError(result, 'PROVIDER_NOT_CONFIGURED', /azure provider is not configured: set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_KEY/);
    expect(fake.requests).toHaveLength(0);
    await expectRecordedFailure(testApp, callIdOf(error), 'PROVIDER_NOT_CONFIGURED');
  });

  it('PROVIDER_AUTH_FAILED when the provider answers 401, not retried, and the key it quotes is never answered', async () => {
    fake.script('chat', { error: { status: 401, message: `Incorrect API key provided: ${apiKey}.`, code: 'invalid_api_key' } });
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello } });
    const error = onlyError(result, 'PROVIDER_AUTH_FAILED', /openai answered 401: Incorrect API key provided/);
    expect((error.extensions?.details as { status?: number }).status).toBe(401);
    expect(fake.requestsTo('chat')).toHaveLength(1);
    expect(fake.requestsTo('chat')[0]!.headers.authorization).toBe(`Bearer ${apiKey}`);
    const call = await expectRecordedFailure(testApp, callIdOf(error), 'PROVIDER_AUTH_FAILED');
    expect(call).toMatchObject({ attemptCount: 1, attempts: [{ number: 1, httpStatus: 401, errorCode: 'PROVIDER_AUTH_FAILED' }] });
    expect(call.errorMessage).toMatch(/Incorrect API key provided/);
  });

  it('PROVIDER_BAD_REQUEST when the provider answers 400, not retried', async () => {
    fake.script('chat', { error: { status: 400, message: "Unsupported value: 'stop' is not supported with this model.", code: 'unsupported_value' } });
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello, stop: ['END'] } });
    const error = onlyError(result, 'PROVIDER_BAD_REQUEST', /openai answered 400: Unsupported value: 'stop'/);
    expect(fake.requestsTo('chat')).toHaveLength(1);
    const call = await expectRecordedFailure(testApp, callIdOf(error), 'PROVIDER_BAD_REQUEST');
    expect(call.attempts).toEqual([expect.objectContaining({ number: 1, httpStatus: 400, errorCode: 'PROVIDER_BAD_REQUEST', waitMs: null })]);
  });

  it('RETRY_EXHAUSTED after MAX_ATTEMPTS answers of 429, with every attempt in the history', async () => {
    fake.script('chat', { error: { status: 429, message: 'Rate limit reached for requests', code: 'rate_limit_exceeded' }, headers: { 'retry-after': '2' } });
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello } });
    const error = onlyError(result, 'RETRY_EXHAUSTED', /Gave up after 2 attempts; the last one failed with: openai answered 429: Rate limit reached/);
    expect(error.extensions?.details).toMatchObject({ attempts: 2, lastErrorCode: 'PROVIDER_RATE_LIMITED', lastStatus: 429 });
    expect(fake.requestsTo('chat')).toHaveLength(2);
    const call = await expectRecordedFailure(testApp, callIdOf(error), 'RETRY_EXHAUSTED');
    expect(call.attemptCount).toBe(2);
    expect(call.attempts).toEqual([
      expect.objectContaining({ number: 1, httpStatus: 429, errorCode: 'PROVIDER_RATE_LIMITED', waitMs: 2000 }),
      expect.objectContaining({ number: 2, httpStatus: 429, errorCode: 'PROVIDER_RATE_LIMITED', waitMs: null }),
    ]);
  });

  it('BAD_USER_INPUT for a per-call limit beyond the configuration, naming the field and the key', async () => {
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello, maxAttempts: 3 } });
    const error = onlyError(result, 'BAD_USER_INPUT', /maxAttempts must be a whole number more than 0 and at most MAX_ATTEMPTS \(2\), got 3/);
    expect(error.extensions?.details).toMatchObject({ field: 'maxAttempts' });
    expect(fake.requestsTo('chat')).toHaveLength(0);
    await expectRecordedFailure(testApp, callIdOf(error), 'BAD_USER_INPUT');
  });

  it('PROVIDER_RATE_LIMITED at once, with retryAfterSeconds, when Retry-After is longer than MAX_WAITING_TIME', async () => {
    fake.script('chat', { error: { status: 429, message: 'Rate limit reached for requests', code: 'rate_limit_exceeded' }, headers: { 'retry-after': '3600' } });
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello } });
    const error = onlyError(result, 'PROVIDER_RATE_LIMITED', /asked to wait 3600 s before a retry, longer than MAX_WAITING_TIME \(60 s\)/);
    expect(error.extensions?.details).toMatchObject({ retryAfterSeconds: 3600, status: 429, attempts: 1 });
    expect(fake.requestsTo('chat')).toHaveLength(1);
    const call = await expectRecordedFailure(testApp, callIdOf(error), 'PROVIDER_RATE_LIMITED');
    expect(call.attempts).toEqual([expect.objectContaining({ number: 1, httpStatus: 429, errorCode: 'PROVIDER_RATE_LIMITED', waitMs: null })]);
  });

  it('DEADLINE_EXCEEDED when the call asks for less time than the provider takes', async () => {
    fake.script('chat', { hang: true });
    const result = await execute(testApp, SendMessageMutation, { input: { messages: hello, deadlineSeconds: 0.3 } });
    const error = onlyError(result, 'DEADLINE_EXCEEDED', /deadline of 0.3 s came after 1 attempt; the last one failed with: openai did not answer in time/);
    expect(error.extensions?.details).toMatchObject({ deadlineSeconds: 0.3, attempts: 1, lastErrorCode: 'PROVIDER_TIMEOUT' });
    const call = await expectRecordedFailure(testApp, callIdOf(error), 'DEADLINE_EXCEEDED');
    expect(call.attempts).toEqual([expect.objectContaining({ number: 1, httpStatus: null, errorCode: 'PROVIDER_TIMEOUT' })]);
  });

  it('PROVIDER_TIMEOUT when the provider hangs longer than TIMEOUT and MAX_ATTEMPTS is 1', async () => {
    fake.script('chat', { hang: true });
    const started = performance.now();
    const result = await execute(timeoutApp, SendMessageMutation, { input: { messages: hello } });
    expect(performance.now() - started).toBeLessThan(5000);
    const error = onlyError(result, 'PROVIDER_TIMEOUT', /openai did not answer in time/);
    expect(fake.requestsTo('chat')).toHaveLength(1);
    const call = await expectRecordedFailure(timeoutApp, callIdOf(error), 'PROVIDER_TIMEOUT');
    expect(call.attempts).toEqual([expect.objectContaining({ number: 1, httpStatus: null, errorCode: 'PROVIDER_TIMEOUT' })]);
    expect(call.attempts[0]!.errorMessage).toMatch(/did not answer in time/);
  });

  it('NOT_FOUND for a template that is not in the prompts folder', async () => {
    const result = await execute(testApp, SendTemplatedMessageMutation, { input: { systemTemplateName: 'missing.mustache', userPrompt: 'hi' } });
    const error = onlyError(result, 'NOT_FOUND', /Template "missing.mustache" not found/);
    expect(fake.requests).toHaveLength(0);
    await expectRecordedFailure(testApp, callIdOf(error), 'NOT_FOUND');
  });

  it('GRAPHQL_VALIDATION_FAILED for a query the schema does not have, with no stack trace', async () => {
    const response = await testApp.app.fetch('http://callboard/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ calls { edges { node { id secretField } } } }' }),
    });
    const text = await response.text();
    bodies.push(text);
    const body = JSON.parse(text) as GraphQLResponse<unknown>;
    const error = onlyError(body, 'GRAPHQL_VALIDATION_FAILED', /Cannot query field "secretField" on type "LlmCall"/);
    expect(error.locations).toBeDefined();
  });
});
