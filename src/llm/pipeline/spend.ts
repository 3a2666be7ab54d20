import { hasAnyLimit, type KeyLimits, type LimitStore, type Reservation } from '../../auth/limits.ts';
import type { Config } from '../../config/config.ts';
import type { Logger } from '../../logger.ts';
import { costOf } from '../prices.ts';
import type { ProviderUsage } from '../providers/provider.ts';

/** Who pays for a call: the key whose limits it counts against (none for the master key and open mode). */
export interface Payer {
  apiKeyId: string | null;
  limits: KeyLimits;
}

/** What a call may spend at most, estimated before it goes upstream. */
export interface SpendEstimate {
  model: string;
  promptTokens: number;
  /** The most the answer may cost in tokens (max_tokens; 0 for embeddings). */
  maxCompletionTokens: number;
}

/** A reservation held while a call is upstream: settled with what it used, or released. Each runs off the caller's path. */
export interface SpendHold {
  settle(spent: { model: string; usage: ProviderUsage | null }): void;
  release(): void;
}

export interface SpendGuard {
  /**
   * The limits step: reserves the estimate before a call goes upstream (RATE_LIMITED or
   * BUDGET_EXCEEDED, and nothing runs, when it does not fit). A stream holds its reservation until
   * it ends; `run` is the same for an answer that comes in one piece.
   */
  hold(payer: Payer, estimate: () => Promise<SpendEstimate>): Promise<SpendHold>;
  /**
   * Runs `upstream` within the payer's limits: reserves first, then settles the reservation with what
   * the call really used, or releases it when the call failed. Settling and releasing happen off the
   * caller's path: a late settle only keeps the reservation, the larger amount, a moment longer.
   */
  run<T>(payer: Payer, estimate: () => Promise<SpendEstimate>, upstream: () => Promise<T>, usageOf: (value: T) => { model: string; usage: ProviderUsage | null }): Promise<T>;
}

const freeHold: SpendHold = { settle: () => {}, release: () => {} };

export function createSpendGuard(options: { limits: LimitStore; prices: Config['prices']; logger: Pick<Logger, 'warn'> }): SpendGuard {
  const { limits, prices, logger } = options;
  const usd = (model: string, usage: { promptTokens: number; completionTokens: number } | null) => costOf(prices, model, usage) ?? '0';
  const afterwards = (work: Promise<void>) =>
    void work.catch((error: unknown) => logger.warn({ err: error }, 'could not settle a limit reservation; it stays counted until its window passes'));

  async function hold(payer: Payer, estimate: () => Promise<SpendEstimate>): Promise<SpendHold> {
    // No key, or a key without limits: not even the estimate is computed.
    if (payer.apiKeyId === null || !hasAnyLimit(payer.limits)) return freeHold;
    const { model, promptTokens, maxCompletionTokens } = await estimate();
    const reservation: Reservation | null = await limits.reserve(payer.apiKeyId, payer.limits, {
      requests: 1,
      tokens: promptTokens + maxCompletionTokens,
      usd: usd(model, { promptTokens, completionTokens: maxCompletionTokens }),
    });
    return {
      settle: (spent) => afterwards(limits.settle(reservation, { tokens: spent.usage?.totalTokens ?? 0, usd: usd(spent.model, spent.usage) })),
      release: () => afterwards(limits.release(reservation)),
    };
  }

  return {
    hold,
    async run(payer, estimate, upstream, usageOf) {
      const held = await hold(payer, estimate);
      const value = await upstream().catch((error: unknown) => {
        held.release();
        throw error;
      });
      held.settle(usageOf(value));
      return value;
    },
  };
}
