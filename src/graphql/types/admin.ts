import { builder } from '../builder.ts';

/** The names of the admin mutations, for the one rule that will guard them. */
export const adminMutationNames = new Set<string>();

/**
 * Declares a mutation that changes Callboard's state other than making calls (cache invalidation,
 * the force_* levers). Declaring them all through here keeps them in one group that one rule can
 * guard (an envelop plugin checking `adminMutationNames`); each records the request's actor.
 */
export const adminMutationField = ((name: string, field: Parameters<typeof builder.mutationField>[1]) => {
  adminMutationNames.add(name);
  builder.mutationField(name, field);
}) as typeof builder.mutationField;
