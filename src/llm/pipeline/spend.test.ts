import { describe, expect, it, vi } from 'vitest';
import { noLimits, type KeyLimits, type LimitStore, type Reservation, type Spend } from '../../auth/limits.ts';
import { CallboardError } from '../../errors.ts';
import { createSpendGuard, type Payer, type SpendEstimate } from './spend.ts';

/*
 * The limits step over a stub LimitStore: which reservation it makes, and how it settles or releases
 * it. The store itself (the SQL, the windows, concurrency) is tested in test/auth/limits.test.ts.
 */

/** $1 per million input tokens, $2 per million output tokens. */
const prices = { 'gpt-4o-mini': { inputPerMillion: '1', outputPerMillion: '2' } };
const limited: KeyLimits = { ...noLimits, usdPerDay: '5' };
const payer: Payer = { apiKeyId: 'key-1', limits: limited };
const estimate: SpendEstimate = { model: 'gpt-4o-mini', promptTokens: 1000, maxCompletionTokens: 500 };

/** Lets the step's off-path settle or release run. */
const settled = () => new Promise((resolve) => setTimeout(resolve, 0));

function setup(options: { refuse?: Error; failSettle?: Error; settleWrittenWhen?: Promise<void> } = {}) {
  const reserved: { apiKeyId: string; limits: KeyLimits; spend: Spend }[] = [];
  const settles: { reservation: Reservation | null; actual: { tokens: number; usd: string } }[] = [];
  const releases: (Reservation | null)[] = [];
  const limits: LimitStore = {
    async reserve(apiKeyId, keyLimits, spend) {
      reserved.push({ apiKeyId, limits: keyLimits, spend });
      if (options.refuse) throw options.refuse;
      return { apiKeyId, reserved: spend, day: '2025-01-01', month: '2025-01', limits: keyLimits };
    },
    async settle(reservation, actual) {
      settles.push({ reservation, actual });
      await options.settleWrittenWhen;
      if (options.failSettle) throw options.failSettle;
    },
    async release(reservation) {
      releases.push(reservation);
      if (options.failSettle) throw options.failSettle;
    },
    usage: async () => new Map(),
  };
  const warnings: unknown[] = [];
  const guard = createSpendGuard({ limits, prices, logger: { warn: (details: unknown) => void warnings.push(details) } });
  return { guard, reserved, settles, releases, warnings };
}

describe('the limits step', () => {
  it.each<[string, Payer]>([
    ['no key (master key, open mode)', { apiKeyId: null, limits: limited }],
    ['a key without limits', { apiKeyId: 'key-1', limits: noLimits }],
  ])('for %s reserves nothing and does not even estimate', async (_name, free) => {
    const { guard, reserved, settles, releases } = setup();
    const estimateOf = vi.fn(async () => estimate);
    const held = await guard.hold(free, estimateOf);
    held.settle({ model: 'gpt-4o-mini', usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 } });
    held.release();
    expect(await guard.run(free, estimateOf, async () => 'answer', () => ({ model: 'gpt-4o-mini', usage: null }))).toBe('answer');
    await settled();
    expect(estimateOf).not.toHaveBeenCalled();
    expect(reserved).toEqual([]);
    expect(settles).toEqual([]);
    expect(releases).toEqual([]);
  });

  it('reserves one request, the prompt and the most the answer may take, and what they would cost', async () => {
    const { guard, reserved } = setup();
    await guard.hold(payer, async () => estimate);
    // 1000 input tokens at $1/M and 500 output tokens at $2/M.
    expect(reserved).toEqual([{ apiKeyId: 'key-1', limits: limited, spend: { requests: 1, tokens: 1500, usd: '0.002' } }]);
  });

  it('reserves no USD for a model without a price, but still its tokens', async () => {
    const { guard, reserved } = setup();
    await guard.hold(payer, async () => ({ ...estimate, model: 'unpriced-model' }));
    expect(reserved[0]!.spend).toEqual({ requests: 1, tokens: 1500, usd: '0' });
  });

  it('settles a hold with the tokens and the cost the call really used, at the model that answered', async () => {
    const { guard, settles, releases } = setup();
    const held = await guard.hold(payer, async () => estimate);
    held.settle({ model: 'gpt-4o-mini-2024-07-18', usage: { promptTokens: 1000, completionTokens: 100, totalTokens: 1100 } });
    await settled();
    expect(settles).toEqual([{ reservation: expect.objectContaining({ apiKeyId: 'key-1', reserved: { requests: 1, tokens: 1500, usd: '0.002' } }), actual: { tokens: 1100, usd: '0.0012' } }]);
    expect(releases).toEqual([]);
  });

  it('settles a call without usage as nothing spent', async () => {
    const { guard, settles } = setup();
    const held = await guard.hold(payer, async () => estimate);
    held.settle({ model: 'gpt-4o-mini', usage: null });
    await settled();
    expect(settles.map((entry) => entry.actual)).toEqual([{ tokens: 0, usd: '0' }]);
  });

  it('releases a hold whose call failed', async () => {
    const { guard, settles, releases } = setup();
    const held = await guard.hold(payer, async () => estimate);
    held.release();
    await settled();
    expect(releases).toEqual([expect.objectContaining({ apiKeyId: 'key-1', reserved: { requests: 1, tokens: 1500, usd: '0.002' } })]);
    expect(settles).toEqual([]);
  });

  it('run: reserves, calls upstream, then settles with what the answer used', async () => {
    const { guard, reserved, settles, releases } = setup();
    const order: string[] = [];
    const value = await guard.run(
      payer,
      async () => {
        order.push('estimate');
        return estimate;
      },
      async () => {
        order.push(`upstream after ${reserved.length} reservation`);
        return { text: 'answer', tokens: 1050 };
      },
      (answer) => ({ model: 'gpt-4o-mini', usage: { promptTokens: 1000, completionTokens: answer.tokens - 1000, totalTokens: answer.tokens } }),
    );
    await settled();
    expect(value).toEqual({ text: 'answer', tokens: 1050 });
    expect(order).toEqual(['estimate', 'upstream after 1 reservation']);
    expect(settles.map((entry) => entry.actual)).toEqual([{ tokens: 1050, usd: '0.0011' }]);
    expect(releases).toEqual([]);
  });

  it('run: releases the reservation of a call that failed, and rethrows its error', async () => {
    const { guard, settles, releases } = setup();
    const failure = new CallboardError('RETRY_EXHAUSTED', 'Gave up after 3 attempts');
    const usageOf = vi.fn();
    await expect(guard.run(payer, async () => estimate, async () => Promise.reject(failure), usageOf)).rejects.toBe(failure);
    await settled();
    expect(releases).toHaveLength(1);
    expect(settles).toEqual([]);
    expect(usageOf).not.toHaveBeenCalled();
  });

  it('run: never calls upstream when the reservation is refused, and passes the refusal on', async () => {
    const refusal = new CallboardError('BUDGET_EXCEEDED', 'The daily budget is used up.', { details: { limit: 'usdPerDay' } });
    const { guard, settles, releases } = setup({ refuse: refusal });
    const upstream = vi.fn(async () => 'answer');
    await expect(guard.run(payer, async () => estimate, upstream, () => ({ model: 'gpt-4o-mini', usage: null }))).rejects.toBe(refusal);
    await settled();
    expect(upstream).not.toHaveBeenCalled();
    expect(settles).toEqual([]);
    expect(releases).toEqual([]);
  });

  it('run: answers without waiting for the settle to be written', async () => {
    let written!: () => void;
    const { guard, settles } = setup({ settleWrittenWhen: new Promise<void>((resolve) => (written = resolve)) });
    expect(await guard.run(payer, async () => estimate, async () => 'answer', () => ({ model: 'gpt-4o-mini', usage: null }))).toBe('answer');
    expect(settles).toHaveLength(1);
    written();
  });

  it('reserves nothing, and runs nothing, when the estimate fails', async () => {
    const { guard, reserved } = setup();
    const broken = new Error('no tokenizer for this model');
    const upstream = vi.fn(async () => 'answer');
    await expect(guard.run(payer, async () => Promise.reject(broken), upstream, () => ({ model: 'gpt-4o-mini', usage: null }))).rejects.toBe(broken);
    expect(reserved).toEqual([]);
    expect(upstream).not.toHaveBeenCalled();
  });

  it('a settle or release that fails is logged, never thrown at the caller', async () => {
    const { guard, warnings } = setup({ failSettle: new Error('database gone') });
    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      expect(await guard.run(payer, async () => estimate, async () => 'answer', () => ({ model: 'gpt-4o-mini', usage: null }))).toBe('answer');
      const held = await guard.hold(payer, async () => estimate);
      held.release();
      await settled();
      expect(warnings).toEqual([{ err: new Error('database gone') }, { err: new Error('database gone') }]);
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off('unhandledRejection', unhandled);
    }
  });
});
