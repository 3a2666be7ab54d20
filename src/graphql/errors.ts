import { GraphQLError } from 'graphql';
import { maskError as yogaMaskError, type YogaServerOptions } from 'graphql-yoga';
import { isCallboardError, type CallboardError } from '../errors.ts';

type MaskError = NonNullable<Exclude<YogaServerOptions<object, object>['maskedErrors'], boolean | undefined>['maskError']>;

/**
 * The one place that maps Callboard's errors to GraphQL: the code goes to `extensions.code`,
 * safe details to `extensions.details`. Anything else falls to Yoga's default, which answers
 * "Unexpected error." with INTERNAL_SERVER_ERROR (and Yoga logs the cause).
 */
export const maskError: MaskError = (error, message, isDev) => {
  const original = error instanceof GraphQLError ? error.originalError : error;
  if (!isCallboardError(original)) return yogaMaskError(error, message, isDev);
  // Handing Yoga back the same error object tells it this is no unexpected failure worth an error log.
  if (error instanceof GraphQLError && error.message === original.message) {
    Object.assign(error.extensions, extensionsOf(original));
    return error;
  }
  return toGraphQLError(original);
};

function extensionsOf(error: CallboardError) {
  return { code: error.code, ...(Object.keys(error.details).length > 0 ? { details: error.details } : {}) };
}

/**
 * A Callboard error as GraphQL shows it, for the phases whose errors Yoga does not pass through
 * maskError (validation, and results set before execution).
 */
export function toGraphQLError(error: CallboardError): GraphQLError {
  return new GraphQLError(error.message, { extensions: extensionsOf(error) });
}
