import { describe, expect, it } from 'vitest';
import { createRedactor } from './record.ts';

const secret = 'sk-live-0123456789';
const redact = createRedactor([secret, 'ab']);

describe('createRedactor', () => {
  it('replaces each secret in nested strings and keys, leaving the input as it was', () => {
    const input = {
      model: 'gpt-4o',
      messages: [{ role: 'user', content: `my key is ${secret}, again ${secret}` }, { role: 'system', content: 'nothing here' }],
      nested: { deeper: [[`x${secret}y`]], [`key-${secret}`]: 1 },
    };
    const before = structuredClone(input);
    const output = redact(input);
    expect(output).toEqual({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'my key is [redacted], again [redacted]' }, { role: 'system', content: 'nothing here' }],
      nested: { deeper: [['x[redacted]y']], 'key-[redacted]': 1 },
    });
    expect(input).toEqual(before);
    // What held no secret is shared, not copied.
    expect(output.messages[1]).toBe(input.messages[1]);
  });

  it('returns a value without secrets as it is', () => {
    const input = { messages: [{ role: 'user', content: 'hello' }], when: new Date(0), count: 3, none: null };
    expect(redact(input)).toBe(input);
    expect(redact('plain')).toBe('plain');
  });

  it('stops at 200 levels of nesting instead of overflowing the stack', () => {
    let deep: unknown = 'leaf';
    for (let level = 0; level < 5000; level++) deep = { inner: deep };
    let walked = redact(deep) as { inner: unknown };
    for (let level = 0; level < 200; level++) walked = walked.inner as { inner: unknown };
    expect(walked).toBe('[nested too deep to store]');
  });

  it('ignores secrets shorter than 4 characters', () => {
    expect(redact('abc abd')).toBe('abc abd');
  });
});
