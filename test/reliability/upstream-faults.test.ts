import { Agent } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countTextTokens } from '../../src/llm/tokens.ts';
import { createTestApp, testConfig, type TestApp } from '../support/app.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion, startFakeOpenAI, type FakeOpenAI, type FakeResponse } from '../support/fake-openai.ts';
import { listen, postGraphQL, type GraphQLAnswer, type Listening } from '../support/http.ts';

const sendMessage = 'mutation FaultySend($input: SendMessageInput!) { sendMessage(input: $input) { message { content } attempts call { id } } }';

/** Every upstream request in ten: seven answers and three faults, one of each kind in turn. */
type Fault = 'ok' | 'rate-limited' | 'server-error' | 'hang' | 'reset';
const faultCycle: Fault[][] = [
  ['ok', 'ok', 'rate-limited', 'ok', 'ok', 'server-error', 'ok', 'hang', 'ok', 'ok'],
  ['ok', 'ok', 'reset', 'ok', 'ok', 'server-error', 'ok', 'rate-limited', 'ok', 'ok'],
  ['ok', 'ok', 'hang', 'ok', 'ok', 'reset', 'ok', 'rate-limited', 'ok', 'ok'],
];

function faultFor(callNumber: number): Fault {
  const round = faultCycle[Math.floor((callNumber - 1) / 10) % faultCycle.length]!;
  return round[(callNumber - 1) % 10]!;
}

/** Codes a call may end with when the provider misbehaves: anything else (INTERNAL_SERVER_ERROR above all) is a bug. */
const providerOutcomes = new Set(['PROVIDER_RATE_LIMITED', 'PROVIDER_TIMEOUT', 'PROVIDER_UNAVAILABLE', 'PROVIDER_ERROR', 'RETRY_EXHAUSTED', 'DEADLINE_EXCEEDED']);

const calls = 300;
const intervalMs = 20;

describe.each(databaseKinds)('upstream faults under load, on %s', (kind) => {
  let fake: FakeOpenAI;
  let testApp: TestApp;
  let server: Listening;
  const agent = new Agent({ keepAlive: true, maxSockets: 100 });
  const faults = new Map<Fault, number>();

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    // As main.ts does at start: building an encoder parses its whole rank table (about half a second of blocked event loop).
    countTextTokens('', 'gpt-4o');
    fake.script('chat', (request): FakeResponse => {
      const fault = faultFor(request.callNumber);
      faults.set(fault, (faults.get(fault) ?? 0) + 1);
      if (fault === 'rate-limited') return { error: { status: 429, message: 'slow down' }, headers: { 'retry-after-ms': '10' } };
      if (fault === 'server-error') return { error: { status: 500, message: 'upstream broke' } };
      if (fault === 'hang') return { hang: true };
      if (fault === 'reset') return { reset: true };
      const content = `echo: ${(request.body.messages as { content: string }[]).at(-1)!.content}`;
      return { json: chatCompletion({ content, model: request.body.model, usage: { prompt_tokens: 3, completion_tokens: 2 } }) };
    });
    // TIMEOUT is 1 s, not less: a loaded CI machine may stall the process for a few hundred
    // milliseconds, which would time out an attempt the fake answered and blur the accounting.
    const ini = `[OpenAI]\nBASE_URL=${fake.openaiBaseURL}\nMAX_ATTEMPTS=3\nWAITING_TIME=0.01\nEXPONENTIAL_BACKOFF_FACTOR=2\nMAX_WAITING_TIME=0.05\nTIMEOUT=1\nCALL_DEADLINE=4\n`;
    testApp = await createTestApp(kind, testConfig(ini, { OPENAI_API_KEY: 'sk-faults' }));
    server = await listen(testApp.app);
  });

  afterAll(async () => {
    agent.destroy();
    await server?.close();
    await testApp?.dispose();
    await fake?.close();
  });

  it(`answers each of ${calls} calls at 50 a second with its own answer or a provider code, and keeps every call and every attempt`, async () => {
    const tag = `faults-${kind}`;
    const answers: Promise<GraphQLAnswer>[] = [];
    for (let index = 0; index < calls; index++) {
      // One call in ten gets one attempt, one in ten half a second: some calls must end with a fault's code.
      const bounds = index % 10 === 0 ? { maxAttempts: 1 } : index % 10 === 5 ? { deadlineSeconds: 0.5 } : {};
      const input = { messages: [{ role: 'USER', content: `call ${index}` }], tags: [tag], ...bounds };
      answers.push(postGraphQL(server.port, { query: sendMessage, variables: { input } }, agent));
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
    const results = await Promise.all(answers);

    const outcomes = new Map<string, number>();
    const callIds: string[] = [];
    results.forEach((result, index) => {
      expect(result.status, JSON.stringify(result)).toBe(200);
      if (result.errors) {
        expect(result.errors, JSON.stringify(result.errors)).toHaveLength(1);
        const code = result.errors[0]!.extensions?.code ?? 'none';
        expect(providerOutcomes, `call ${index} ended with ${code}: ${result.errors[0]!.message}`).toContain(code);
        outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
        callIds.push(result.errors[0]!.extensions!.details!.callId as string);
      } else {
        // Its own answer: no response crossed to another caller on a retried connection.
        expect(result.data.sendMessage.message.content).toBe(`echo: call ${index}`);
        outcomes.set('SUCCESS', (outcomes.get('SUCCESS') ?? 0) + 1);
        callIds.push(result.data.sendMessage.call.id as string);
      }
    });
    expect(new Set(callIds).size).toBe(calls);
    expect(calls - (outcomes.get('SUCCESS') ?? 0), 'calls that ended with a code').toBeGreaterThan(0);
    for (const fault of ['rate-limited', 'server-error', 'hang', 'reset'] as const) expect(faults.get(fault) ?? 0, fault).toBeGreaterThan(10);

    await testApp.services.history.flush();
    const prisma = testApp.services.database.prisma;
    const stored = await prisma.llmCall.findMany({ where: { tags: { has: tag } }, select: { id: true, status: true, attemptCount: true } });
    expect(stored.map((call) => call.id).sort()).toEqual([...callIds].sort());
    const attempts = await prisma.llmAttempt.count({ where: { call: { tags: { has: tag } } } });
    // Each upstream request the fake saw is one attempt row, hung and reset ones included.
    expect(attempts).toBe(fake.requestsTo('chat').length);
    expect(stored.reduce((sum, call) => sum + call.attemptCount, 0)).toBe(attempts);
    expect(stored.filter((call) => call.status === 'SUCCESS')).toHaveLength(outcomes.get('SUCCESS') ?? 0);
    // Each fault is recorded as what it was.
    const byCode = await prisma.llmAttempt.groupBy({ by: ['errorCode'], where: { call: { tags: { has: tag } } }, _count: { _all: true } });
    expect(Object.fromEntries(byCode.map((group) => [group.errorCode ?? 'none', group._count._all]))).toEqual({
      none: faults.get('ok'),
      PROVIDER_RATE_LIMITED: faults.get('rate-limited'),
      PROVIDER_UNAVAILABLE: faults.get('server-error')! + faults.get('reset')!,
      PROVIDER_TIMEOUT: faults.get('hang'),
    });

    console.info(
      `upstream faults on ${kind}: ${calls} calls, ${attempts} attempts (${JSON.stringify(Object.fromEntries(faults))}), outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`,
    );
  }, 60_000);
});
