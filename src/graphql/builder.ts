import SchemaBuilder from '@pothos/core';
import ComplexityPlugin from '@pothos/plugin-complexity';
import ScopeAuthPlugin, { AuthScopeFailureType, type AuthFailure } from '@pothos/plugin-scope-auth';
import type { ApiKeyRole } from '../auth/keys.ts';
import { holdsRole, roleRank } from '../auth/identity.ts';
import { CallboardError } from '../errors.ts';
import type { GraphQLContext } from './context.ts';

/**
 * The roles, as scopes: each names the least role that holds it. ADMIN holds all three, MEMBER
 * `member` and `viewer`, VIEWER only `viewer`. Fields declare the scope they need where they are
 * defined; nothing else in a resolver checks a role.
 */
const scopeRoles = { admin: 'ADMIN', member: 'MEMBER', viewer: 'VIEWER' } as const satisfies Record<string, ApiKeyRole>;

function neededRole(failure: AuthFailure): ApiKeyRole {
  if (failure.kind === AuthScopeFailureType.AuthScope) return scopeRoles[failure.scope as keyof typeof scopeRoles] ?? 'ADMIN';
  if (failure.kind === AuthScopeFailureType.AnyAuthScopes || failure.kind === AuthScopeFailureType.AllAuthScopes) {
    const roles = failure.failures.map(neededRole);
    return roles.sort((a, b) => roleRank[a] - roleRank[b])[0] ?? 'ADMIN';
  }
  return 'ADMIN';
}

// Fields are non-null unless they say `nullable: true`: a dashboard can trust what the schema promises.
export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  AuthScopes: { admin: boolean; member: boolean; viewer: boolean };
  Scalars: {
    JSON: { Input: unknown; Output: unknown };
    DateTime: { Input: Date; Output: Date | string };
    /** USD as an exact decimal string (src/money.ts). */
    Decimal: { Input: string; Output: string };
  };
}>({
  defaultFieldNullability: false,
  // Scope auth first: no other plugin's wrapper runs before a field's role is checked.
  plugins: [ScopeAuthPlugin, ComplexityPlugin],
  // Fields declare their cost here (each 1, a list times 10 unless it says otherwise); the cost is
  // checked once per request before execution, in query-limits.ts, not around each root resolver.
  complexity: { disabled: true },
  scopeAuth: {
    // A subscription's role is checked once, when it starts: a refused one never subscribes (nor takes a slot).
    authorizeOnSubscribe: true,
    authScopes: ({ identity }) => ({
      admin: holdsRole(identity, 'ADMIN'),
      member: holdsRole(identity, 'MEMBER'),
      viewer: true,
    }),
    unauthorizedError: (_parent, context, info, result) => {
      const role = neededRole(result.failure);
      return new CallboardError('FORBIDDEN', `${info.parentType.name}.${info.fieldName} needs the ${role} role; this key is ${context.identity.role}.`, {
        details: { requiredRole: role, role: context.identity.role },
      });
    },
  },
});

/**
 * Every root field needs ADMIN unless it says otherwise (Query, Mutation and Subscription carry
 * `admin` as their type scope): a new field is closed until someone opens it here, on purpose.
 */
export const access = {
  /** Any key: reads of its tenant's history and stats, without bodies. */
  viewer: { skipTypeScopes: true, authScopes: { viewer: true } },
  /** MEMBER or ADMIN: calls, and reads of its tenant's bodies and cache. */
  member: { skipTypeScopes: true, authScopes: { member: true } },
} as const;
