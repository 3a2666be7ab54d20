import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyFilter, maxFilterKeys } from './key-filter.ts';

/** Distinct SHA-256 hex keys, as cacheKey makes them, the same at every run. */
const keys = (from: number, count: number) => Array.from({ length: count }, (_unused, index) => createHash('sha256').update(`key ${from + index}`).digest('hex'));

const falsePositives = (filter: KeyFilter, unseen: string[]) => unseen.filter((key) => filter.mightContain(key)).length / unseen.length;

describe('KeyFilter', () => {
  it('says "maybe" for every key added and "no" for most others, about 1% at capacity', () => {
    const filter = new KeyFilter(50_000);
    const added = keys(0, 50_000);
    const unseen = keys(1_000_000, 50_000);
    expect(unseen.every((key) => !filter.mightContain(key))).toBe(true);

    for (const key of added) filter.add(key);

    expect(added.every((key) => filter.mightContain(key))).toBe(true);
    const rate = falsePositives(filter, unseen);
    expect(rate).toBeGreaterThan(0.004);
    expect(rate).toBeLessThan(0.02);
    expect(filter.full).toBe(false);
  });

  it('past its capacity gives more false positives, never a false negative, and says it is full', () => {
    const filter = new KeyFilter(10_000);
    const added = keys(0, 40_000);
    for (const key of added.slice(0, 11_000)) filter.add(key);
    expect(filter.full).toBe(true);
    for (const key of added.slice(11_000)) filter.add(key);

    expect(added.every((key) => filter.mightContain(key))).toBe(true);
    expect(falsePositives(filter, keys(1_000_000, 20_000))).toBeGreaterThan(0.3);
  });

  it('estimates the distinct keys added, duplicates not counted', () => {
    const filter = new KeyFilter(100_000);
    const added = keys(0, 60_000);
    for (const key of added) filter.add(key);
    for (const key of added.slice(0, 30_000)) filter.add(key);

    expect(filter.estimatedKeys()).toBeGreaterThan(57_000);
    expect(filter.estimatedKeys()).toBeLessThan(63_000);
  });

  it('takes keys that are not SHA-256 hex, by hashing them', () => {
    const filter = new KeyFilter(1000);
    const odd = ['', 'short', 'Z'.repeat(64), 'A'.repeat(64), 'k'.repeat(100), 'é'.repeat(64)];
    for (const key of odd) filter.add(key);

    expect(odd.every((key) => filter.mightContain(key))).toBe(true);
    expect(filter.mightContain('another')).toBe(false);
  });

  it('is sized at about 1.2 bytes per key of capacity with 7 bits per key, up to a cap', () => {
    const million = new KeyFilter(1_000_000);
    expect(million.hashCount).toBe(7);
    expect(million.bytes).toBeGreaterThan(1_150_000);
    expect(million.bytes).toBeLessThan(1_250_000);
    expect(new KeyFilter(10 * maxFilterKeys, 0.5).capacity).toBe(maxFilterKeys);
  });
});
