import { isPaidField } from './paid-fields.ts';
import { schema } from './schema.ts';

const rootFields = [schema.getQueryType()!, schema.getMutationType()!, schema.getSubscriptionType()!].flatMap((type) => Object.values(type.getFields()));

/**
 * Root fields that cost money upstream (marked `paidField` where they are defined). Over GET (an
 * `<img>` or a link can send one) they run only with a preflight-forcing header; the mutations among
 * them are refused over GET by Yoga anyway.
 */
export const paidFields: ReadonlySet<string> = new Set(rootFields.filter(isPaidField).map((field) => field.name));

/**
 * Root query and subscription fields only an ADMIN may run (keys, settings, overrides): those that
 * keep their type's ADMIN scope rather than opening themselves with `access.viewer` or
 * `access.member`. Read from the schema, so the role rules stay declared in one place.
 */
export const adminQueryFields: ReadonlySet<string> = new Set(
  [schema.getQueryType()!, schema.getSubscriptionType()!]
    .flatMap((type) => Object.values(type.getFields()))
    .filter((field) => (field.extensions as { pothosOptions?: { skipTypeScopes?: boolean } }).pothosOptions?.skipTypeScopes !== true)
    .map((field) => field.name),
);
