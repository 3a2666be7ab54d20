import SchemaBuilder from '@pothos/core';
import type { GraphQLContext } from './context.ts';

// Fields are non-null unless they say `nullable: true`: a dashboard can trust what the schema promises.
export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  Scalars: {
    JSON: { Input: unknown; Output: unknown };
    DateTime: { Input: Date; Output: Date | string };
  };
}>({ defaultFieldNullability: false });
