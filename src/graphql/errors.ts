import { GraphQLError } from 'graphql';
import { maskError as yogaMaskError, type YogaServerOptions } from 'graphql-yoga';
import { isCallboardError } from '../errors.ts';

type MaskError = NonNullable<Exclude<YogaServerOptions<object, object>['maskedErrors'], boolean | undefined>['maskError']>;

/**
 * The one place that maps Callboard's errors to GraphQL: the code goes to `extensions.code`,
 * safe details to `extensions.details`. Anything else falls to Yoga's default, which answers
 * "Unexpected error." with INTERNAL_SERVER_ERROR (and Yoga logs the cause).
 */
export const maskError: MaskError = (error, message, isDev) => {
  const original = error instanceof GraphQLError ? error.originalError : error;
  if (!isCallboardError(original)) return yogaMaskError(error, message, isDev);
  const extensions = { code: original.code, ...(Object.keys(original.details).length > 0 ? { details: original.details } : {}) };
  // Handing Yoga back the same error object tells it this is no unexpected failure worth an error log.
  if (error instanceof GraphQLError && error.message === original.message) {
    Object.assign(error.extensions, extensions);
    return error;
  }
  return new GraphQLError(original.message, { extensions });
};
