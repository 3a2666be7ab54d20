import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.ts';
import { InputLimitError } from '../errors.ts';
import { checkCallOptions, checkMessages, checkTexts, nestingDepth, type InputLimits } from './input-limits.ts';

const limits: InputLimits = { ...loadConfig([], {}).config.limits, maxMessages: 3, maxCharactersPerCall: 10, maxMetadataDepth: 3, maxMetadataBytes: 30, maxTags: 2, maxTagLength: 5 };

function refusal(check: () => void): InputLimitError {
  try {
    check();
  } catch (error) {
    expect(error).toBeInstanceOf(InputLimitError);
    return error as InputLimitError;
  }
  throw new Error('expected a refusal');
}

/** `{"a": {"a": ... 1}}`, `levels` objects deep, built without recursion. */
function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let level = 0; level < levels; level++) value = { a: value };
  return value;
}

describe('nestingDepth', () => {
  it('counts objects and arrays, not scalars', () => {
    expect(nestingDepth(1, 10)).toBe(0);
    expect(nestingDepth(null, 10)).toBe(0);
    expect(nestingDepth({}, 10)).toBe(1);
    expect(nestingDepth({ a: [], b: { c: [1, [2]] } }, 10)).toBe(4);
  });

  it('walks a value 100,000 levels deep without overflowing the stack, and stops past the bound', () => {
    expect(nestingDepth(nested(100_000), 100_000)).toBe(100_000);
    expect(nestingDepth(nested(100_000), 20)).toBe(21);
  });

  it('ends on a cyclic value', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(nestingDepth(cyclic, 50)).toBe(51);
  });
});

describe('checkCallOptions', () => {
  it('takes tags and metadata within the bounds', () => {
    expect(() => checkCallOptions({ tags: ['a', 'bcdef'], metadata: { a: { b: 'x' } } }, limits)).not.toThrow();
    expect(() => checkCallOptions({ tags: null, metadata: null }, limits)).not.toThrow();
  });

  it('names the field and the limit of each refusal', () => {
    expect(refusal(() => checkCallOptions({ tags: ['a', 'b', 'c'] }, limits)).details).toEqual({ field: 'tags', limit: 'MAX_TAGS', max: 2, actual: 3 });
    expect(refusal(() => checkCallOptions({ tags: ['a', 'abcdef'] }, limits)).details).toEqual({ field: 'tags', limit: 'MAX_TAG_LENGTH', max: 5, actual: 6, index: 1 });
    expect(refusal(() => checkCallOptions({ metadata: nested(4) }, limits)).details).toEqual({ field: 'metadata', limit: 'MAX_METADATA_DEPTH', max: 3 });
    expect(refusal(() => checkCallOptions({ metadata: nested(5_000) }, limits)).code).toBe('BAD_USER_INPUT');
    // {"a":"é…"}: each é is two bytes.
    expect(refusal(() => checkCallOptions({ metadata: { a: 'é'.repeat(12) } }, limits)).details).toEqual({ field: 'metadata', limit: 'MAX_METADATA_BYTES', max: 30, actual: 32 });
  });

  it('refuses an empty tag as before', () => {
    expect(() => checkCallOptions({ tags: [' '] }, limits)).toThrow(/non-empty/);
  });
});

describe('checkMessages and checkTexts', () => {
  it('counts messages, and the characters of contents and names together', () => {
    expect(() => checkMessages([{ content: '12345' }, { content: '123', name: 'ab' }], limits)).not.toThrow();
    expect(refusal(() => checkMessages([{ content: '12345' }, { content: '123', name: 'abc' }], limits)).details).toEqual({
      field: 'messages',
      limit: 'MAX_CHARACTERS_PER_CALL',
      max: 10,
      actual: 11,
    });
    expect(refusal(() => checkMessages([{ content: '' }, { content: '' }, { content: '' }, { content: '' }], limits)).details).toEqual({
      field: 'messages',
      limit: 'MAX_MESSAGES',
      max: 3,
      actual: 4,
    });
  });

  it('counts the texts of one call together', () => {
    expect(() => checkTexts(['12345', '12345'], limits)).not.toThrow();
    expect(refusal(() => checkTexts(['12345', '123456'], limits, 'text')).details).toMatchObject({ field: 'text', limit: 'MAX_CHARACTERS_PER_CALL', actual: 11 });
  });
});
