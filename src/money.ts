/**
 * Money as exact decimal strings ("0.0005253"): USD never passes through a float. Amounts are
 * computed as integers of 10^-12 USD (picodollars) and written as the shortest decimal string.
 * A price per million tokens has at most 6 decimals, so a token costs a whole number of
 * picodollars and every cost is exact. The database holds them as numeric(24, 12).
 */

/** USD as a decimal string: digits, an optional minus and an optional fraction, no exponent, no trailing zeros. */
export type Usd = string;

/** Decimal places of every stored amount (picodollars). */
export const usdScale = 12;
/** Decimal places a price per million tokens may have: 10^-6 USD per million tokens is 10^-12 USD per token. */
export const priceScale = 6;

const unit = 10n ** BigInt(usdScale);
const decimalPattern = /^(-)?(\d+)(?:\.(\d+))?$/;

/**
 * The integer of 10^-`scale` units a decimal string holds; null when the text is not a plain
 * decimal (no exponent, no sign but an optional minus) or has more significant decimals than `scale`.
 */
export function parseDecimal(text: string, scale: number = usdScale): bigint | null {
  const match = decimalPattern.exec(text.trim());
  if (!match) return null;
  const fraction = (match[3] ?? '').replace(/0+$/, '');
  if (fraction.length > scale) return null;
  const value = BigInt(match[2]!) * 10n ** BigInt(scale) + BigInt(fraction.padEnd(scale, '0') || '0');
  return match[1] ? -value : value;
}

/** Picodollars as the shortest decimal string: 525300000n is "0.0005253", 0n is "0". */
export function formatPicoUsd(picos: bigint): Usd {
  const negative = picos < 0n;
  const magnitude = negative ? -picos : picos;
  const whole = magnitude / unit;
  const fraction = (magnitude % unit).toString().padStart(usdScale, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** Picodollars of a USD amount; throws on anything but an exact decimal of at most 12 places. */
export function picoUsdOf(amount: Usd): bigint {
  const picos = parseDecimal(amount);
  if (picos === null) throw new RangeError(`not a USD amount with at most ${usdScale} decimals: "${amount}"`);
  return picos;
}

/**
 * A USD amount read from the database (numeric arrives as text, "0.000525300000") or from a
 * caller, in its shortest form; null stays null. A number is refused: it may already be inexact.
 */
export function usdOrNull(value: unknown): Usd | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'bigint') return formatPicoUsd(value);
  if (typeof value === 'string') return formatPicoUsd(picoUsdOf(value));
  // A Prisma Decimal (decimal.js): toFixed() writes it without an exponent.
  if (typeof value === 'object' && typeof (value as { toFixed?: unknown }).toFixed === 'function') {
    return formatPicoUsd(picoUsdOf((value as { toFixed(): string }).toFixed()));
  }
  throw new TypeError(`expected a decimal string for a USD amount, got ${typeof value}`);
}

/** The sum of some amounts; null when every one is null (unpriced), as SQL's sum. */
export function sumUsd(amounts: Iterable<Usd | null>): Usd | null {
  let total: bigint | null = null;
  for (const amount of amounts) if (amount !== null) total = (total ?? 0n) + picoUsdOf(amount);
  return total === null ? null : formatPicoUsd(total);
}

/** a - b. */
export function subtractUsd(a: Usd, b: Usd): Usd {
  return formatPicoUsd(picoUsdOf(a) - picoUsdOf(b));
}

/** -1, 0 or 1 as a is less than, equal to or more than b. */
export function compareUsd(a: Usd, b: Usd): -1 | 0 | 1 {
  const difference = picoUsdOf(a) - picoUsdOf(b);
  return difference < 0n ? -1 : difference > 0n ? 1 : 0;
}

/** A price per million tokens, as integers of 10^-6 USD per million tokens (= picodollars per token). */
export interface ExactPrice {
  /** Picodollars per prompt token. */
  input: bigint;
  /** Picodollars per completion token. */
  output: bigint;
}

/** What tokens cost at a price, exactly. */
export function costOfTokens(price: ExactPrice, promptTokens: number, completionTokens: number): Usd {
  return formatPicoUsd(tokenCount(promptTokens) * price.input + tokenCount(completionTokens) * price.output);
}

// Providers report whole tokens; anything else (a share rounded elsewhere, a malformed usage) is rounded, never a throw on a call's path.
function tokenCount(tokens: number): bigint {
  return Number.isFinite(tokens) && tokens > 0 ? BigInt(Math.round(tokens)) : 0n;
}
