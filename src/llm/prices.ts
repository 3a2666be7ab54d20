import type { ModelPrice } from '../config/config.ts';

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

/** USD for a usage at the model's price; null when the model has no price or there is no usage. */
export function costOf(
  prices: Readonly<Record<string, ModelPrice>>,
  model: string,
  usage: { promptTokens: number; completionTokens: number } | null,
): number | null {
  const price = priceFor(prices, model);
  if (!price || !usage) return null;
  return (usage.promptTokens * price.inputPerMillion + usage.completionTokens * price.outputPerMillion) / 1_000_000;
}
