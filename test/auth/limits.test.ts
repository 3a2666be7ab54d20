import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLimitStore, noLimits, type KeyLimits, type LimitStore, type Reservation, type Spend } from '../../src/auth/limits.ts';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { CallboardError } from '../../src/errors.ts';
import { compareUsd, formatPicoUsd, picoUsdOf, subtractUsd, sumUsd } from '../../src/money.ts';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../support/database.ts';

const oneRequest: Spend = { requests: 1, tokens: 0, usd: '0' };
// Just before a minute boundary, so a fixed-window limiter would open a fresh window 10 ms later.
const noon = Date.UTC(2026, 11, 1, 12, 0, 59, 990);

async function failure(promise: Promise<unknown>): Promise<CallboardError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof CallboardError) return error;
    throw error;
  }
  throw new Error('expected a CallboardError, the promise resolved');
}

/** Runs every task at once; the outcome of each, in order. */
async function settleAll<T>(tasks: Array<() => Promise<T>>): Promise<Array<PromiseSettledResult<T>>> {
  return Promise.allSettled(tasks.map((task) => task()));
}

describe.each(databaseKinds)('API key limits on %s', (kind) => {
  let testDatabase: TestDatabase;
  let database: Database;
  let clock: number;
  const now = () => clock;
  let store: LimitStore;

  beforeAll(async () => {
    testDatabase = await createTestDatabase(kind);
    database = testDatabase.database;
  });
  afterAll(async () => {
    await testDatabase?.dispose();
  });
  beforeEach(() => {
    clock = noon;
    store = createLimitStore({ database, now });
  });

  async function createKey(limits: Partial<KeyLimits> = {}): Promise<{ id: string; limits: KeyLimits }> {
    const id = randomUUID();
    const full = { ...noLimits, ...limits };
    await database.query(
      `INSERT INTO "ApiKey" ("id", "name", "role", "tenant", "prefix", "hash", "createdBy", "requestsPerMinute", "tokensPerMinute", "usdPerDay", "usdPerMonth")
       VALUES ($1, 'limits test', 'MEMBER', 'acme', 'cb_test', $2, 'test', $3, $4, $5, $6)`,
      [id, randomBytes(32).toString('hex'), full.requestsPerMinute, full.tokensPerMinute, full.usdPerDay, full.usdPerMonth],
    );
    return { id, limits: full };
  }

  /** Two Callboard instances on one database: two pools on Postgres; PGlite has a single instance. */
  async function twoInstances(): Promise<{ stores: [LimitStore, LimitStore]; close(): Promise<void> }> {
    if (!testDatabase.url) return { stores: [store, store], close: async () => {} };
    const first = await createDatabase({ url: testDatabase.url, dataDir: 'unused', poolSize: 8 });
    const second = await createDatabase({ url: testDatabase.url, dataDir: 'unused', poolSize: 8 });
    return {
      stores: [createLimitStore({ database: first, now }), createLimitStore({ database: second, now })],
      close: async () => {
        await Promise.all([first.close(), second.close()]);
      },
    };
  }

  describe('requests per minute (GCRA)', () => {
    it('lets a burst of the limit through, then one request per emission interval', async () => {
      const key = await createKey({ requestsPerMinute: 10 });
      const counting = countingDatabase(database);
      store = createLimitStore({ database: counting, now });
      for (let i = 0; i < 10; i++) await store.reserve(key.id, key.limits, oneRequest);

      const refused = await failure(store.reserve(key.id, key.limits, oneRequest));
      expect(refused.code).toBe('RATE_LIMITED');
      expect(refused.details).toMatchObject({ limit: 'requestsPerMinute', maximum: 10, used: 10, retryAfterSeconds: 6 });
      // Ten reservations, then a refusal and its explanation.
      expect(counting.calls).toBe(12);
      // Crossing the minute boundary opens no fresh window; asked again, this instance knows without a round trip.
      clock += 10;
      expect((await failure(store.reserve(key.id, key.limits, oneRequest))).details).toMatchObject({ limit: 'requestsPerMinute', used: 10, retryAfterSeconds: 6 });
      expect(counting.calls).toBe(12);
      // A call that needs no request slot is not refused by it; another limit is asked about again
      // (and refused: the bucket keeps its time until empty, and 59.99 s of it is a full minute for 11 too).
      await store.reserve(key.id, key.limits, { requests: 0, tokens: 0, usd: '0' });
      expect(counting.calls).toBe(13);
      expect((await failure(store.reserve(key.id, { ...key.limits, requestsPerMinute: 11 }, oneRequest))).code).toBe('RATE_LIMITED');
      expect(counting.calls).toBe(15);

      clock = noon + 6_000;
      await expect(store.reserve(key.id, key.limits, oneRequest)).resolves.toMatchObject({ apiKeyId: key.id });
      expect((await failure(store.reserve(key.id, key.limits, oneRequest))).details.retryAfterSeconds).toBe(6);
      clock = noon + 60_000;
      expect((await store.usage([key.id])).get(key.id)!.requestsThisMinute).toBe(1);
    });

    it('lets exactly 10 of 40 concurrent requests through on a 10-rpm key, from two instances', async () => {
      const key = await createKey({ requestsPerMinute: 10 });
      const instances = await twoInstances();
      try {
        const outcomes = await settleAll(Array.from({ length: 40 }, (_, i) => () => instances.stores[i % 2]!.reserve(key.id, key.limits, oneRequest)));
        expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(10);
        const reasons = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as CallboardError] : []));
        expect(new Set(reasons.map((reason) => reason.code))).toEqual(new Set(['RATE_LIMITED']));

        clock += 10;
        const afterBoundary = await settleAll(Array.from({ length: 10 }, (_, i) => () => instances.stores[i % 2]!.reserve(key.id, key.limits, oneRequest)));
        expect(afterBoundary.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(0);
      } finally {
        await instances.close();
      }
    });

    it('counts nothing for a refused call, even on the limits it would have fitted', async () => {
      const key = await createKey({ requestsPerMinute: 10, tokensPerMinute: 1_000 });
      await store.reserve(key.id, key.limits, { requests: 1, tokens: 900, usd: '0' });
      expect((await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 200, usd: '0' }))).details.limit).toBe('tokensPerMinute');
      expect((await store.usage([key.id])).get(key.id)).toMatchObject({ requestsThisMinute: 1, tokensThisMinute: 900 });
    });
  });

  describe('tokens per minute', () => {
    it('reserves, gives back what a settle did not use, and all of a release', async () => {
      const key = await createKey({ tokensPerMinute: 1_000 });
      const first = await store.reserve(key.id, key.limits, { requests: 1, tokens: 600, usd: '0' });
      const refused = await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 600, usd: '0' }));
      expect(refused.code).toBe('RATE_LIMITED');
      // 1,200 tokens in a 1,000-token minute: 200 tokens too many, 12 s to drain.
      expect(refused.details).toMatchObject({ limit: 'tokensPerMinute', maximum: 1_000, used: 600, requested: 600, retryAfterSeconds: 12 });

      await store.settle(first, { tokens: 100, usd: '0' });
      const second = await store.reserve(key.id, key.limits, { requests: 1, tokens: 600, usd: '0' });
      expect((await store.usage([key.id])).get(key.id)!.tokensThisMinute).toBe(700);

      await store.release(second);
      expect((await store.usage([key.id])).get(key.id)!.tokensThisMinute).toBe(100);
      // Settled or released once: a second release in a `finally` gives nothing back twice.
      await store.release(first);
      await store.release(second);
      expect((await store.usage([key.id])).get(key.id)!.tokensThisMinute).toBe(100);
    });

    it('counts a call that spent more than it reserved, and makes the next ones wait for it', async () => {
      const key = await createKey({ tokensPerMinute: 1_000 });
      const reservation = await store.reserve(key.id, key.limits, { requests: 1, tokens: 500, usd: '0' });
      await store.settle(reservation, { tokens: 1_000, usd: '0' });
      expect((await store.usage([key.id])).get(key.id)!.tokensThisMinute).toBe(1_000);
      expect((await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 100, usd: '0' }))).details.retryAfterSeconds).toBe(6);
    });

    it('refuses at once, without a retry time, a call that alone exceeds the limit', async () => {
      const key = await createKey({ tokensPerMinute: 1_000 });
      const counting = countingDatabase(database);
      const refused = await failure(createLimitStore({ database: counting, now }).reserve(key.id, key.limits, { requests: 1, tokens: 1_001, usd: '0' }));
      expect(refused.code).toBe('RATE_LIMITED');
      expect(refused.message).toMatch(/alone.*never pass/);
      expect(refused.details).toEqual({ limit: 'tokensPerMinute', maximum: 1_000, requested: 1_001, callExceedsLimit: true });
      expect(counting.calls).toBe(0);
    });
  });

  describe('USD budgets', () => {
    it('never spends more than the daily budget with 50 concurrent calls from two instances, and resets the next UTC day', async () => {
      const key = await createKey({ usdPerDay: '5', tokensPerMinute: 200_000 });
      const instances = await twoInstances();
      const settledUsd: string[] = [];
      let settledTokens = 0;
      try {
        const outcomes = await settleAll(
          Array.from({ length: 50 }, (_, i) => async () => {
            const limitStore = instances.stores[i % 2]!;
            const reservation = await limitStore.reserve(key.id, key.limits, { requests: 1, tokens: 2_000, usd: '0.3' });
            await sleep(i % 5);
            // Every seventh call fails upstream and gives its reservation back; the others cost 0.05 to 0.30.
            if (i % 7 === 3) return limitStore.release(reservation);
            const usd = formatPicoUsd(picoUsdOf('0.05') + (BigInt((i * 37) % 26) * picoUsdOf('1')) / 100n);
            const tokens = 100 + ((i * 53) % 1_900);
            await limitStore.settle(reservation, { tokens, usd });
            settledUsd.push(usd);
            settledTokens += tokens;
          }),
        );
        const reasons = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as CallboardError] : []));
        expect(reasons.filter((reason) => reason.code !== "BUDGET_EXCEEDED" || reason.details.limit !== "usdPerDay").map((reason) => [reason.code, reason.details])).toEqual([]);
        // Even with nothing given back, 16 reservations of $0.30 fit in $5.
        expect(outcomes.length - reasons.length).toBeGreaterThanOrEqual(16);
        const total = sumUsd(settledUsd) ?? '0';
        expect(compareUsd(total, '5')).toBeLessThanOrEqual(0);
        // The counter is the ledger: nothing leaked by reservations that were settled or released.
        const usage = (await store.usage([key.id])).get(key.id)!;
        // Exact: the ledger is numeric, the amounts decimal strings.
        expect(usage.usdToday).toBe(total);
        expect(usage.usdThisMonth).toBe(total);
        // The clock stands still, so the token bucket holds exactly what was settled (float8 noise aside).
        expect(usage.tokensThisMinute).toBeGreaterThanOrEqual(settledTokens);
        expect(usage.tokensThisMinute).toBeLessThanOrEqual(settledTokens + 1);

        const refused = await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: sumUsd([subtractUsd('5', total), '0.01'])! }));
        expect(refused.details).toMatchObject({ limit: 'usdPerDay', maximum: '5', retryAfterSeconds: Math.ceil((Date.UTC(2026, 11, 2) - noon) / 1000) });
        expect(refused.details.used).toBe(total);
      } finally {
        await instances.close();
      }

      clock = Date.UTC(2026, 11, 2, 0, 0, 0);
      const nextDay = await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '4.5' });
      expect(nextDay).toMatchObject({ day: '2026-12-02', month: '2026-12' });
      const usage = (await store.usage([key.id])).get(key.id)!;
      expect(usage.usdToday).toBe('4.5');
      expect(usage.usdThisMonth).toBe(sumUsd(['4.5', ...settledUsd]));
    });

    it('admits a budget to the cent, without float drift', async () => {
      const key = await createKey({ usdPerDay: '4.8' });
      for (let i = 0; i < 16; i++) await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.3' });
      expect((await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.000001' }))).code).toBe('BUDGET_EXCEEDED');
      expect((await store.usage([key.id])).get(key.id)!.usdToday).toBe('4.8');
    });

    it('holds a monthly budget across days, and resets it the next UTC month', async () => {
      const key = await createKey({ usdPerMonth: '1' });
      await store.settle(await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.7' }), { tokens: 0, usd: '0.6' });
      clock = Date.UTC(2026, 11, 31, 23, 0, 0);
      const refused = await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.5' }));
      expect(refused.code).toBe('BUDGET_EXCEEDED');
      expect(refused.details).toMatchObject({ limit: 'usdPerMonth', maximum: '1', requested: '0.5', retryAfterSeconds: 3600 });
      expect(refused.details.used).toBe('0.6');
      await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.4' });

      clock = Date.UTC(2027, 0, 1, 0, 0, 1);
      await expect(store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.9' })).resolves.toMatchObject({ month: '2027-01' });
      expect((await store.usage([key.id])).get(key.id)).toMatchObject({ usdToday: '0.9', usdThisMonth: '0.9' });
    });

    it('refuses at once a call whose reservation alone is over the budget', async () => {
      const key = await createKey({ usdPerDay: '1' });
      const refused = await failure(store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '1.5' }));
      expect(refused.code).toBe('BUDGET_EXCEEDED');
      expect(refused.details).toMatchObject({ limit: 'usdPerDay', callExceedsLimit: true });
    });

    it('settles a reservation of a past day without touching the new day, and still in its month', async () => {
      const key = await createKey({ usdPerDay: '5', usdPerMonth: '100' });
      clock = Date.UTC(2026, 11, 1, 23, 59, 59);
      const late = await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '2' });
      clock = Date.UTC(2026, 11, 2, 0, 0, 5);
      await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '1' });
      await store.settle(late, { tokens: 0, usd: '0.5' });
      expect((await store.usage([key.id])).get(key.id)).toMatchObject({ usdToday: '1', usdThisMonth: '1.5' });
    });

    it('never moves a day back for an instance whose clock lags', async () => {
      const key = await createKey({ usdPerDay: '1' });
      clock = Date.UTC(2026, 11, 2, 0, 0, 1);
      await store.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.6' });
      const lagging = createLimitStore({ database, now: () => Date.UTC(2026, 11, 1, 23, 59, 59) });
      expect((await failure(lagging.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.6' }))).details.limit).toBe('usdPerDay');
      await expect(lagging.reserve(key.id, key.limits, { requests: 1, tokens: 0, usd: '0.3' })).resolves.toMatchObject({ day: '2026-12-02' });
      expect((await store.usage([key.id])).get(key.id)!.usdToday).toBe('0.9');
    });
  });

  describe('usage', () => {
    it('reports the current usage against each limit, zeros for a key never used', async () => {
      const key = await createKey({ requestsPerMinute: 10, tokensPerMinute: 1_000, usdPerDay: '5', usdPerMonth: '20' });
      const unused = await createKey({ requestsPerMinute: 10 });
      const reservations: Array<Reservation | null> = [];
      for (let i = 0; i < 3; i++) reservations.push(await store.reserve(key.id, key.limits, { requests: 1, tokens: 200, usd: '0.1' }));
      await store.settle(reservations[0]!, { tokens: 50, usd: '0.02' });
      await store.release(reservations[1]!);

      const usage = await store.usage([key.id, unused.id]);
      expect(usage.get(key.id)!.requestsThisMinute).toBe(3);
      expect(usage.get(key.id)!.tokensThisMinute).toBe(250);
      expect(usage.get(key.id)!.usdToday).toBe('0.12');
      expect(usage.get(key.id)!.usdThisMonth).toBe('0.12');
      expect(usage.get(unused.id)).toEqual({ requestsThisMinute: 0, tokensThisMinute: 0, usdToday: '0', usdThisMonth: '0' });

      // The bucket drains continuously: 6 s later one request and 100 tokens have left it.
      clock += 6_000;
      expect((await store.usage([key.id])).get(key.id)).toMatchObject({ requestsThisMinute: 2, tokensThisMinute: 150 });
      // Read against other limits (a key's limits as the caller has them cached).
      const doubled = new Map([[key.id, { ...key.limits, requestsPerMinute: 20 }]]);
      expect((await store.usage([key.id], doubled)).get(key.id)!.requestsThisMinute).toBe(4);
      expect(await store.usage([])).toEqual(new Map());
    });
  });

  describe('round trips', () => {
    it('makes none for a key without limits, one per reservation, and none for a settle that changes nothing', async () => {
      const counting = countingDatabase(database);
      const counted = createLimitStore({ database: counting, now });
      const unlimited = await createKey();
      expect(await counted.reserve(unlimited.id, unlimited.limits, { requests: 1, tokens: 500, usd: '1' })).toBeNull();
      await counted.settle(null, { tokens: 10, usd: '0.1' });
      await counted.release(null);
      expect(counting.calls).toBe(0);

      const requestsOnly = await createKey({ requestsPerMinute: 100 });
      const reservation = await counted.reserve(requestsOnly.id, requestsOnly.limits, { requests: 1, tokens: 500, usd: '1' });
      expect(counting.calls).toBe(1);
      await counted.settle(reservation, { tokens: 10, usd: '0.1' });
      expect(counting.calls).toBe(1);

      const budgeted = await createKey({ usdPerDay: '10', tokensPerMinute: 10_000 });
      const second = await counted.reserve(budgeted.id, budgeted.limits, { requests: 1, tokens: 500, usd: '1' });
      await counted.settle(second, { tokens: 10, usd: '0.1' });
      expect(counting.calls).toBe(3);
    });

    it('reserves after all when a settle made room between the refusal and the look at why, in two round trips', async () => {
      const key = await createKey({ requestsPerMinute: 10 });
      await store.reserve(key.id, key.limits, oneRequest);
      // Stands for a settle on another instance landing between the refusal and the second statement.
      let refusals = 0;
      const counting = countingDatabase({
        query: <Row,>(sql: string, parameters?: unknown[]) =>
          sql.includes('ON CONFLICT') && refusals++ === 0 ? Promise.resolve([] as Row[]) : database.query<Row>(sql, parameters),
      });
      await expect(createLimitStore({ database: counting, now }).reserve(key.id, key.limits, oneRequest)).resolves.toMatchObject({ apiKeyId: key.id });
      expect(counting.calls).toBe(2);
      expect((await store.usage([key.id])).get(key.id)!.requestsThisMinute).toBe(2);
    });

    it('skips the WAL flush wait of its own commits only, and waits for it when asked', async () => {
      const key = await createKey({ requestsPerMinute: 100, tokensPerMinute: 10_000 });
      const settings = await database.withSession(async (session) => {
        const seen: string[] = [];
        for (const waitForWalFlush of [false, true]) {
          const sessionStore = createLimitStore({ database: session, now, waitForWalFlush });
          const reservation = await sessionStore.reserve(key.id, key.limits, { requests: 1, tokens: 100, usd: '0' });
          await sessionStore.settle(reservation, { tokens: 50, usd: '0' });
          const [row] = await session.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
          seen.push(row!.synchronous_commit);
        }
        return seen;
      });
      expect(settings).toEqual(['on', 'on']);
      expect((await store.usage([key.id])).get(key.id)).toMatchObject({ requestsThisMinute: 2, tokensThisMinute: 100 });
    });

    it('answers NOT_FOUND for a key that does not exist', async () => {
      const refused = await failure(store.reserve(randomUUID(), { ...noLimits, requestsPerMinute: 1 }, oneRequest));
      expect(refused.code).toBe('NOT_FOUND');
    });
  });
});

function countingDatabase(database: Pick<Database, 'query'>): Pick<Database, 'query'> & { calls: number } {
  const counting = {
    calls: 0,
    query: <Row,>(sql: string, parameters?: unknown[]) => {
      counting.calls += 1;
      return database.query<Row>(sql, parameters);
    },
  };
  return counting;
}
