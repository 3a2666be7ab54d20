import { describe, expect, it } from 'vitest';
import { formatMoney, formatMs, formatRate, moneyValue } from './format.ts';

describe('the dashboard formats', () => {
  it('shows money sent as a decimal string as written, and as a number without float noise', () => {
    expect(formatMoney('0.0002109')).toBe('$0.0002109');
    expect(formatMoney('12.50')).toBe('$12.50');
    expect(formatMoney(0.0000036)).toBe('$0.0000036');
    expect(formatMoney(0.1 + 0.2)).toBe('$0.3');
    expect(formatMoney(0)).toBe('$0');
    expect(formatMoney(null)).toBe('—');
    expect(formatMoney(undefined)).toBe('—');
  });

  it('reads money as a number for charts and sums, from either form', () => {
    expect(moneyValue('0.0002109')).toBe(0.0002109);
    expect(moneyValue(0.25)).toBe(0.25);
    expect(moneyValue(null)).toBeNull();
    expect(moneyValue('not a number')).toBeNull();
  });

  it('writes rates and latencies', () => {
    expect(formatRate(0.4)).toBe('40.0%');
    expect(formatRate(null)).toBe('—');
    expect(formatMs(0)).toBe('0 ms');
    expect(formatMs(2.345)).toBe('2.3 ms');
    expect(formatMs(416.4)).toBe('416 ms');
    expect(formatMs(1250)).toBe('1.25 s');
  });
});
