import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.ts';
import { isCallboardError, type CallboardError } from '../errors.ts';
import { createParseCaches, parseWithinLimits, type QueryLimits } from './query-limits.ts';

const limits: QueryLimits = {
  ...loadConfig([], {}).config.limits,
  maxQueryDepth: 15,
  maxAliases: 30,
  maxQueryTokens: 5000,
  maxQueryCost: 50_000,
  maxDirectives: 50,
  maxPaidOperations: 5,
  analyticsStatementTimeoutMs: 15_000,
};

/** Calls `work` with almost no stack left, the way a caller deep in other frames would. */
function withLittleStack<T>(work: () => T): T {
  const descend = (): T => {
    try {
      return descend();
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      // Here the stack is all but full: the work runs out of it at once (else a shallower frame retries).
      return work();
    }
  };
  return descend();
}

describe('parseWithinLimits', () => {
  it('parses what fits the limits', () => {
    expect(parseWithinLimits('{ calls { edges { node { id } } } }', limits).definitions).toHaveLength(1);
  });

  it('turns a stack overflow inside the parser into QUERY_TOO_DEEP', () => {
    const query = `{${'a {'.repeat(60)} b ${'}'.repeat(60)}}`;
    const outcome = withLittleStack(() => {
      try {
        return parseWithinLimits(query, limits);
      } catch (error) {
        if (isCallboardError(error)) return error;
        throw error;
      }
    });
    expect(isCallboardError(outcome)).toBe(true);
    expect((outcome as CallboardError).code).toBe('QUERY_TOO_DEEP');
    expect((outcome as Error).cause).toBeInstanceOf(RangeError);
  });

  it('refuses nesting past the parser floor even when MAX_QUERY_DEPTH is lower', () => {
    expect(() => parseWithinLimits(`{${'a {'.repeat(65)} b ${'}'.repeat(65)}}`, limits)).toThrow(expect.objectContaining({ code: 'QUERY_TOO_DEEP' }));
    expect(parseWithinLimits(`{${'a {'.repeat(63)} b ${'}'.repeat(63)}}`, limits).kind).toBe('Document');
  });
});

describe('createParseCaches', () => {
  it('keeps small query texts and never a huge one', () => {
    const { documentCache, errorCache } = createParseCaches();
    const small = '{ providers { apiType } }';
    documentCache.set(small, parseWithinLimits(small, limits));
    expect(documentCache.get(small)?.kind).toBe('Document');
    const huge = `{ ${'providers { apiType } '.repeat(1_000_000)}}`;
    errorCache.set(huge, new Error('too large'));
    expect(errorCache.get(huge)).toBeUndefined();
    expect(errorCache.size).toBe(0);
  });
});
