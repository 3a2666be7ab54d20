import { describe, expect, it } from 'vitest';
import { formatMoney, formatMs, formatRate, moneyValue, sumMoney } from './format.ts';

describe('the dashboard formats', () => {
  it('shows money as the decimal string the server wrote', () => {
    expect(formatMoney('0.0002109')).toBe('$0.0002109');
    expect(formatMoney('12.50')).toBe('$12.50');
    expect(formatMoney('0')).toBe('$0');
    expect(formatMoney(null)).toBe('—');
    expect(formatMoney(undefined)).toBe('—');
  });

  it('sums money exactly, where floats would not', () => {
    expect(sumMoney(['0.1', '0.2', null])).toBe('0.3');
    expect(sumMoney(['0.0338797', '0.0000001'])).toBe('0.0338798');
    expect(sumMoney([null, undefined])).toBeNull();
  });

  it('reads money as a number for charts', () => {
    expect(moneyValue('0.0002109')).toBe(0.0002109);
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
