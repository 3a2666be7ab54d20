import { describe, expect, it } from 'vitest';
import { compareUsd, costOfTokens, formatPicoUsd, parseDecimal, picoUsdOf, subtractUsd, sumUsd, usdOrNull } from './money.ts';

describe('money', () => {
  it('computes a cost of many digits exactly: 1234 x 0.15/M + 567 x 0.60/M', () => {
    const price = { input: parseDecimal('0.15', 6)!, output: parseDecimal('0.60', 6)! };
    expect(costOfTokens(price, 1234, 567)).toBe('0.0005253');
    // The float way: (1234 * 0.15 + 567 * 0.6) / 1e6 is 0.0005252999999999999.
    expect((1234 * 0.15 + 567 * 0.6) / 1e6).not.toBe(0.0005253);
  });

  it('writes the shortest decimal, without exponent or trailing zeros', () => {
    expect(formatPicoUsd(0n)).toBe('0');
    expect(formatPicoUsd(1n)).toBe('0.000000000001');
    expect(formatPicoUsd(-2_500_000_000_000n)).toBe('-2.5');
    expect(usdOrNull('0.000525300000')).toBe('0.0005253');
    expect(usdOrNull(null)).toBeNull();
    expect(() => usdOrNull(0.1)).toThrow(TypeError);
  });

  it('parses plain decimals only, up to the scale', () => {
    expect(parseDecimal('12.50')).toBe(12_500_000_000_000n);
    expect(parseDecimal('0.0000000000001')).toBeNull();
    expect(parseDecimal('0.1000000000000')).toBe(100_000_000_000n);
    for (const bad of ['1e-7', '', '.5', '5.', '+1', 'NaN', '1,5']) expect(parseDecimal(bad), bad).toBeNull();
    expect(() => picoUsdOf('1e-7')).toThrow(RangeError);
  });

  it('adds, subtracts and compares exactly: ten times 0.1 is 1', () => {
    expect(sumUsd(Array.from({ length: 10 }, () => '0.1'))).toBe('1');
    expect(sumUsd([null, null])).toBeNull();
    expect(sumUsd([null, '0.3'])).toBe('0.3');
    expect(subtractUsd('0.3', '0.1')).toBe('0.2');
    expect(compareUsd('4.8', '4.80')).toBe(0);
    expect(compareUsd('0.000000000001', '0')).toBe(1);
  });
});
