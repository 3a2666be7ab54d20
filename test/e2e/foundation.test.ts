import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql } from '../gql/index.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';

// The example of the OpenAI cookbook "How to count tokens with tiktoken", and what the API itself reported.
const cookbookMessages = [
  { role: 'SYSTEM', content: 'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.' },
  { role: 'SYSTEM', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
  { role: 'SYSTEM', name: 'example_assistant', content: 'Things working well together will increase revenue.' },
  { role: 'SYSTEM', name: 'example_user', content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage." },
  { role: 'SYSTEM', name: 'example_assistant', content: "Let's talk later when we're less busy about how to do better." },
  { role: 'USER', content: "This late pivot means we don't have time to boil the ocean for the client deliverable." },
] as const;

const TokenCountQuery = graphql(`
  query TokenCount($model: String, $text: String, $messages: [ChatMessageInput!]) {
    tokenCount(model: $model, text: $text, messages: $messages) {
      tokens
      model
      encoding
      fallback
    }
  }
`);

const SettingsQuery = graphql(`
  query Settings {
    settings {
      section
      key
      value
      source
      origin
      secret
    }
  }
`);

describe.each(databaseKinds)('foundation on %s', (kind) => {
  let testApp: TestApp;
  beforeAll(async () => {
    testApp = await createTestApp(kind, testConfig('[OpenAI]\nMODEL=gpt-4o\n', { OPENAI_API_KEY: 'sk-never-shown', CALLBOARD_SERVER__PORT: '4100' }));
  });
  afterAll(() => testApp.dispose());

  it.each([
    ['gpt-4', 129, 'cl100k_base'],
    ['gpt-4-0613', 129, 'cl100k_base'],
    ['gpt-3.5-turbo', 129, 'cl100k_base'],
    ['gpt-4o', 124, 'o200k_base'],
    ['gpt-4o-mini', 124, 'o200k_base'],
  ])('tokenCount of the cookbook messages for %s equals the API count (%i)', async (model, tokens, encoding) => {
    const result = await testApp.execute(TokenCountQuery, { model, messages: [...cookbookMessages] });
    expect(result.errors).toBeUndefined();
    expect(result.data?.tokenCount).toEqual({ tokens, model, encoding, fallback: false });
  });

  it('counts a text with the default MODEL, and reports the fallback for an unknown model', async () => {
    const byDefault = await testApp.execute(TokenCountQuery, { text: 'tiktoken is great!' });
    expect(byDefault.data?.tokenCount).toEqual({ tokens: 6, model: 'gpt-4o', encoding: 'o200k_base', fallback: false });
    const unknown = await testApp.execute(TokenCountQuery, { model: 'my-local-llama', text: 'tiktoken is great!' });
    expect(unknown.data?.tokenCount).toMatchObject({ model: 'my-local-llama', encoding: 'o200k_base', fallback: true });
  });

  it.each([
    ['neither text nor messages', {}],
    ['both text and messages', { text: 'hi', messages: [{ role: 'USER' as const, content: 'hi' }] }],
  ])('answers BAD_USER_INPUT for %s', async (_case, variables) => {
    const result = await testApp.execute(TokenCountQuery, variables);
    expect(result.data).toBeNull();
    expect(result.errors).toHaveLength(1);
    expect(result.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
    expect(result.errors![0]!.message).toMatch(/text or messages/);
  });

  it('answers a GraphQL validation error with its code and no stack trace', async () => {
    const response = await testApp.app.fetch('http://callboard/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ tokenCount(text: "x", messages: [{ role: KING, content: "x" }]) { tokens } }' }),
    });
    const body = await response.json();
    expect(body.errors[0].extensions.code).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/);
  });

  it('shows the effective settings with their sources, and secrets only as set or unset', async () => {
    const result = await testApp.execute(SettingsQuery);
    const settings = result.data!.settings;
    const find = (key: string) => settings.find((setting) => setting.key === key);
    expect(find('MODEL')).toMatchObject({ section: 'OpenAI', value: 'gpt-4o', source: 'FILE', origin: 'test.ini' });
    expect(find('PORT')).toMatchObject({ value: '4100', source: 'ENVIRONMENT', origin: 'CALLBOARD_SERVER__PORT' });
    expect(find('TEMPERATURE')).toMatchObject({ value: '1.5', source: 'DEFAULT', origin: null });
    expect(find('OPENAI_API_KEY')).toMatchObject({ section: 'Secrets', value: 'set', secret: true });
    expect(find('AZURE_OPENAI_KEY')).toMatchObject({ value: null, secret: true });
    expect(JSON.stringify(result)).not.toContain('sk-never-shown');
  });

  it('answers /health while alive and /ready while the database answers', async () => {
    expect((await testApp.app.fetch('http://callboard/health')).status).toBe(200);
    expect((await testApp.app.fetch('http://callboard/ready')).status).toBe(200);
  });
});

describe('readiness', () => {
  it('answers /ready with 503 once the database is gone', async () => {
    const testApp = await createTestApp('pglite');
    await testApp.testDatabase.database.close();
    expect((await testApp.app.fetch('http://callboard/ready')).status).toBe(503);
    expect((await testApp.app.fetch('http://callboard/health')).status).toBe(200);
    await testApp.app.dispose();
  });
});
