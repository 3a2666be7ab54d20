import type { ModelPrice } from '../config/config.ts';
import { costOfTokens, parseDecimal, priceScale, type ExactPrice, type Usd } from '../money.ts';

/**
 * The price of a model: an exact entry, else the longest entry that is a dated or suffixed
 * variant's base (gpt-4o-mini-2024-07-18 costs what gpt-4o-mini costs). Null when none fits.
 */
export function priceFor(prices: Readonly<Record<string, ModelPrice>>, model: string): ModelPrice | null {
  const exact = prices[model];
  if (exact) return exact;
  let best: string | null = null;
  for (const name of Object.keys(prices)) {
    if (model.startsWith(`${name}-`) && (best === null || name.length > best.length)) best = name;
  }
  return best === null ? null : prices[best]!;
}

const exactPrices = new WeakMap<ModelPrice, ExactPrice>();

/** A price per million tokens as picodollars per token (config allows at most 6 decimals: exact). */
function exactPriceOf(price: ModelPrice): ExactPrice {
  let exact = exactPrices.get(price);
  if (!exact) {
    const picos = (perMillion: Usd) => {
      const value = parseDecimal(perMillion, priceScale);
      if (value === null) throw new RangeError(`a price needs at most ${priceScale} decimals, got "${perMillion}"`);
      return value;
    };
    exact = { input: picos(price.inputPerMillion), output: picos(price.outputPerMillion) };
    exactPrices.set(price, exact);
  }
  return exact;
}

/** USD for a usage at the model's price, exact; null when the model has no price or there is no usage. */
export function costOf(
  prices: Readonly<Record<string, ModelPrice>>,
  model: string,
  usage: { promptTokens: number; completionTokens: number } | null,
): Usd | null {
  const price = priceFor(prices, model);
  if (!price || !usage) return null;
  return costOfTokens(exactPriceOf(price), usage.promptTokens, usage.completionTokens);
}
