import { isObjectType, type GraphQLField, type GraphQLSchema } from 'graphql';

/**
 * The `extensions` of a root field whose every selection may make an upstream model call someone
 * pays for. Set where the field is defined; the per-request bound ([Limits] MAX_PAID_OPERATIONS)
 * and any other door to the same calls read it back through `isPaidField`/`paidFieldNames`.
 */
export const paidField = { paid: true } as const;

export function isPaidField(field: Pick<GraphQLField<unknown, unknown>, 'extensions'>): boolean {
  return (field.extensions as { paid?: unknown } | undefined)?.paid === true;
}

/** Every paid field of a schema as `Type.field`, e.g. `Mutation.sendMessage`. */
export function paidFieldNames(schema: GraphQLSchema): string[] {
  return [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]
    .filter((type) => isObjectType(type))
    .flatMap((type) => Object.values(type.getFields()).filter(isPaidField).map((field) => `${type.name}.${field.name}`));
}
