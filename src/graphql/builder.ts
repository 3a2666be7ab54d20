import SchemaBuilder from '@pothos/core';
import ComplexityPlugin from '@pothos/plugin-complexity';
import type { GraphQLContext } from './context.ts';

// Fields are non-null unless they say `nullable: true`: a dashboard can trust what the schema promises.
export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  Scalars: {
    JSON: { Input: unknown; Output: unknown };
    DateTime: { Input: Date; Output: Date | string };
  };
}>({
  defaultFieldNullability: false,
  plugins: [ComplexityPlugin],
  // Fields declare their cost here (each 1, a list times 10 unless it says otherwise); the cost is
  // checked once per request before execution, in query-limits.ts, not around each root resolver.
  complexity: { disabled: true },
});
