import { describe, expect, it } from 'vitest';
import { newId } from './ids.ts';

const uuidV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('newId', () => {
  it('makes RFC 9562 version 7 UUIDs whose first 48 bits are the time in milliseconds', () => {
    const now = Date.UTC(2026, 11, 1, 12, 0, 0, 123);
    const id = newId(now + 10_000);
    expect(id).toMatch(uuidV7);
    expect(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(now + 10_000);
  });

  it('sorts in the order the ids were made, within one millisecond and past 4,096 of them', () => {
    const at = Date.now() + 20_000;
    const ids = Array.from({ length: 5000 }, () => newId(at));
    for (const id of ids) expect(id).toMatch(uuidV7);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    // A clock that goes back does not break the order either.
    const later = newId(at - 5);
    expect(later > ids.at(-1)!).toBe(true);
  });

  it('varies its random bits', () => {
    const tails = new Set(Array.from({ length: 100 }, () => newId().slice(19)));
    expect(tails.size).toBe(100);
  });
});
