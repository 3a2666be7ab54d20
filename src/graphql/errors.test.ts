import { GraphQLError } from 'graphql';
import { describe, expect, it } from 'vitest';
import { CallboardError } from '../errors.ts';
import { maskError } from './errors.ts';

describe('maskError', () => {
  it("puts a Callboard error's code and details in extensions, keeping its message and path", () => {
    const original = new CallboardError('PROVIDER_RATE_LIMITED', 'Slow down', { details: { status: 429 } });
    const located = new GraphQLError(original.message, { path: ['sendMessage'], originalError: original });
    const masked = maskError(located, 'Unexpected error.', false) as GraphQLError;
    expect(masked.message).toBe('Slow down');
    expect(masked.path).toEqual(['sendMessage']);
    expect(masked.extensions).toMatchObject({ code: 'PROVIDER_RATE_LIMITED', details: { status: 429 } });
  });

  it('hides anything unexpected behind "Unexpected error." with INTERNAL_SERVER_ERROR and no stack', () => {
    const located = new GraphQLError('connect ECONNREFUSED 10.0.0.1 password=hunter2', { originalError: new TypeError('x') });
    const masked = maskError(located, 'Unexpected error.', false) as GraphQLError;
    expect(masked.message).toBe('Unexpected error.');
    expect(masked.extensions.code).toBe('INTERNAL_SERVER_ERROR');
    expect(JSON.stringify(masked.toJSON())).not.toContain('hunter2');
  });

  it('answers DATABASE_UNAVAILABLE for a database that cannot be reached, on the same error object (Yoga logs no stack for it)', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const prismaDown = Object.assign(new Error('Invalid `prisma.llmCall.count()` invocation'), {
      code: 'P1001',
      meta: { driverAdapterError: { cause: { kind: 'DatabaseNotReachable' } } },
    });
    const shutdown = Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' });
    for (const original of [refused, prismaDown, shutdown, new Error('PGlite is closed')]) {
      const located = new GraphQLError(original.message, { path: ['calls'], originalError: original });
      const masked = maskError(located, 'Unexpected error.', false) as GraphQLError;
      expect(masked).toBe(located);
      expect(masked.extensions.code).toBe('DATABASE_UNAVAILABLE');
      expect(masked.message).not.toContain('5432');
    }
    const syntax = Object.assign(new Error('syntax error at or near "SELEC"'), { code: '42601' });
    expect((maskError(new GraphQLError(syntax.message, { originalError: syntax }), 'Unexpected error.', false) as GraphQLError).extensions.code).toBe(
      'INTERNAL_SERVER_ERROR',
    );
  });
});
