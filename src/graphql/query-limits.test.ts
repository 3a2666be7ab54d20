import { describe, expect, it } from 'vitest';
import { isCallboardError, type CallboardError } from '../errors.ts';
import { parseWithinLimits, type QueryLimits } from './query-limits.ts';

const limits: QueryLimits = {
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
