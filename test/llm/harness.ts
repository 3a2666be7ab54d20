import { usdOrNull } from '../../src/money.ts';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import type { PrismaClient } from '../../src/db/generated/client.ts';
import { isCallboardError, type CallboardError } from '../../src/errors.ts';
import type { CacheStatus } from '../../src/llm/cache.ts';
import { callIdOf, type ChatMessage, type ChatStream, type LlmClient } from '../../src/llm/client.ts';
import { createLogger } from '../../src/logger.ts';
import { createServices, type Services } from '../../src/services.ts';
import { testConfig } from '../support/app.ts';
import { createTestDatabase, type DatabaseKind, type TestDatabase } from '../support/database.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../support/fake-openai.ts';

export const openaiKey = 'sk-test-SECRET-123';
export const azureKey = 'az-test-SECRET-456';

export interface StartOptions {
  /** `[OpenAI]` keys, on top of BASE_URL pointing at the fake. */
  openai?: Record<string, string | number>;
  /** Further config.ini sections. */
  ini?: string;
  /** Changes to the default environment (both providers configured); undefined removes a variable. */
  env?: Record<string, string | undefined>;
  random?: () => number;
}

interface LedgerEntry {
  id: string | undefined;
  status: 'SUCCESS' | 'ERROR';
  cacheStatus: CacheStatus | null;
  errorCode: string | null;
}

export interface LlmHarness {
  readonly fake: FakeOpenAI;
  readonly testDatabase: TestDatabase;
  readonly prisma: PrismaClient;
  /** Every wait the retry loops asked for in the current test, in milliseconds. */
  readonly waits: number[];
  /** Builds the services over this describe's database; they are closed after the test. */
  start(options?: StartOptions): Promise<Services>;
  /** Writes the pending history of every started services. */
  flush(): Promise<void>;
}

/**
 * One database and one fake upstream for the enclosing describe. After each test it closes the
 * services, then checks that every call made through them has its history row with the status the
 * caller saw, and that no stored row holds an API key.
 */
export function useLlmHarness(kind: DatabaseKind): LlmHarness {
  let fake: FakeOpenAI | undefined;
  let testDatabase: TestDatabase | undefined;
  const started: Services[] = [];
  const ledger: LedgerEntry[] = [];
  const waits: number[] = [];
  let ledgerSeen = 0;
  let rowsSeen = 0;

  beforeAll(async () => {
    [fake, testDatabase] = await Promise.all([startFakeOpenAI(), createTestDatabase(kind)]);
  });

  afterEach(async () => {
    await Promise.all(started.splice(0).map((services) => services.close()));
    fake!.reset();
    waits.length = 0;
    const prisma = testDatabase!.database.prisma;
    await prisma.runtimeOverride.deleteMany();

    // Counters move on before any check, so that one test's failure is not reported again by the next ones.
    const entries = ledger.slice(ledgerSeen);
    ledgerSeen = ledger.length;
    const rowCount = await prisma.llmCall.count();
    const rowsAdded = rowCount - rowsSeen;
    rowsSeen = rowCount;

    expect(entries.filter((entry) => entry.id === undefined), 'failed calls without the id of their history row').toEqual([]);
    expect(rowsAdded, 'history rows written in this test').toBe(entries.length);
    const ids = entries.map((entry) => entry.id!);
    const rows = await prisma.llmCall.findMany({ where: { id: { in: ids } }, select: { id: true, status: true, cacheStatus: true, errorCode: true } });
    const byId = new Map(rows.map((row) => [row.id, row]));
    for (const entry of entries) {
      const expected = { status: entry.status, errorCode: entry.errorCode, ...(entry.cacheStatus ? { cacheStatus: entry.cacheStatus } : {}) };
      expect(byId.get(entry.id!), `history row of call ${entry.id}`).toMatchObject(expected);
    }
    const stored = await storedRowsText(prisma, ids);
    expect(stored).not.toContain(openaiKey);
    expect(stored).not.toContain(azureKey);
  });

  afterAll(async () => {
    await Promise.all(started.splice(0).map((services) => services.close()));
    await Promise.all([fake?.close(), testDatabase?.dispose()]);
  });

  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the harness is used before its beforeAll ran');
    return value;
  };

  return {
    get fake() {
      return ready(fake);
    },
    get testDatabase() {
      return ready(testDatabase);
    },
    get prisma() {
      return ready(testDatabase).database.prisma;
    },
    waits,
    async start(options = {}) {
      const upstream = ready(fake);
      const openai = { BASE_URL: upstream.openaiBaseURL, ...options.openai };
      const ini = `[OpenAI]\n${Object.entries(openai)
        .map(([key, value]) => `${key}=${value}`)
        .join('\n')}\n${options.ini ?? ''}`;
      const environment = { OPENAI_API_KEY: openaiKey, AZURE_OPENAI_ENDPOINT: upstream.azureEndpoint, AZURE_OPENAI_KEY: azureKey, ...options.env };
      const definedEnvironment = Object.fromEntries(Object.entries(environment).filter((entry): entry is [string, string] => entry[1] !== undefined));
      const services = await createServices({
        loaded: testConfig(ini, definedEnvironment),
        database: ready(testDatabase).database,
        logger: createLogger('silent'),
        sleep: async (milliseconds) => {
          waits.push(milliseconds);
        },
        random: options.random ?? (() => 0.5),
      });
      started.push(services);
      return { ...services, llm: recording(services.llm, ledger) };
    },
    async flush() {
      await Promise.all(started.map((services) => services.history.flush()));
    },
  };
}

function recording(llm: LlmClient, ledger: LedgerEntry[]): LlmClient {
  const track = async <T extends { call: { id: string }; cacheStatus: CacheStatus }>(call: () => Promise<T>): Promise<T> => {
    try {
      const result = await call();
      ledger.push({ id: result.call.id, status: 'SUCCESS', cacheStatus: result.cacheStatus, errorCode: null });
      return result;
    } catch (error) {
      ledger.push({ id: callIdOf(error), status: 'ERROR', cacheStatus: null, errorCode: isCallboardError(error) ? error.code : null });
      throw error;
    }
  };
  return {
    sendMessage: (input) => track(() => llm.sendMessage(input)),
    embed: (input) => track(() => llm.embed(input)),
    // A stream is in the ledger once it ends, as it is in the history.
    streamMessage: async (input) => {
      let stream: ChatStream;
      try {
        stream = await llm.streamMessage(input);
      } catch (error) {
        ledger.push({ id: callIdOf(error), status: 'ERROR', cacheStatus: null, errorCode: isCallboardError(error) ? error.code : null });
        throw error;
      }
      const opened = stream;
      async function* chunks() {
        try {
          for await (const chunk of opened) yield chunk;
          ledger.push({ id: opened.call.id, status: 'SUCCESS', cacheStatus: opened.cacheStatus, errorCode: null });
        } catch (error) {
          ledger.push({ id: opened.call.id, status: 'ERROR', cacheStatus: opened.cacheStatus, errorCode: isCallboardError(error) ? error.code : null });
          throw error;
        }
      }
      const iterator = chunks();
      return { call: opened.call, cacheStatus: opened.cacheStatus, result: () => opened.result(), [Symbol.asyncIterator]: () => iterator };
    },
    templatedCall: (input) => track(() => llm.templatedCall(input)),
  };
}

/** The LlmCall (with its body), LlmAttempt and CacheEntry rows of some calls (all when not given), as one text. */
export async function storedRowsText(prisma: PrismaClient, callIds?: string[]): Promise<string> {
  const [calls, attempts, entries] = await Promise.all([
    prisma.llmCall.findMany({ where: callIds ? { id: { in: callIds } } : {}, include: { body: true } }),
    prisma.llmAttempt.findMany({ where: callIds ? { callId: { in: callIds } } : {} }),
    prisma.cacheEntry.findMany({ where: callIds ? { createdByCallId: { in: callIds } } : {} }),
  ]);
  return JSON.stringify({ calls, attempts, entries });
}

export function user(content: string): ChatMessage[] {
  return [{ role: 'user', content }];
}

/** The error a promise rejects with; fails when it resolves. */
export async function failure(promise: Promise<unknown>): Promise<CallboardError> {
  const outcome = await promise.then(
    (value) => ({ resolved: true as const, value }),
    (error: unknown) => ({ resolved: false as const, error }),
  );
  if (outcome.resolved) throw new Error(`expected a failure, got ${JSON.stringify(outcome.value)}`);
  expect(isCallboardError(outcome.error), `a CallboardError, got ${String(outcome.error)}`).toBe(true);
  return outcome.error as CallboardError;
}

/** The history row of a call, its body's fields beside its own and its attempts in order, after writing what is pending. */
export async function historyRow(harness: LlmHarness, id: string | undefined) {
  await harness.flush();
  expect(id).toBeDefined();
  const { body, ...row } = await harness.prisma.llmCall.findUniqueOrThrow({
    where: { id: id! },
    include: { attempts: { orderBy: { number: 'asc' } }, body: true },
  });
  // Money as the API shows it: exact decimal strings (Prisma reads numeric as a Decimal object).
  return { ...row, costUsd: usdOrNull(row.costUsd), costSavedUsd: usdOrNull(row.costSavedUsd), metadata: body?.metadata ?? null, requestBody: body?.requestBody ?? null, responseBody: body?.responseBody ?? null };
}
