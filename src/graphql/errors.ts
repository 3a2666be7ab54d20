import { GraphQLError } from 'graphql';
import { isAsyncIterable, maskError as yogaMaskError, type Plugin, type YogaServerOptions } from 'graphql-yoga';
import { isDatabaseUnreachable } from '../db/database-errors.ts';
import { CallboardError, isCallboardError } from '../errors.ts';

type MaskError = NonNullable<Exclude<YogaServerOptions<object, object>['maskedErrors'], boolean | undefined>['maskError']>;

/**
 * The one place that maps Callboard's errors to GraphQL: the code goes to `extensions.code`,
 * safe details to `extensions.details`. Anything else falls to Yoga's default, which answers
 * "Unexpected error." with INTERNAL_SERVER_ERROR (and Yoga logs the cause).
 */
export const maskError: MaskError = (error, message, isDev) => {
  const original = error instanceof GraphQLError ? error.originalError : error;
  // A database that cannot be reached (pg, Prisma's adapters, a closed PGlite) is a state, not a bug:
  // the client gets a code to retry on, and the log is not flooded with one stack per request.
  const known = isCallboardError(original) ? original : isDatabaseUnreachable(original) ? databaseUnavailable() : undefined;
  if (!known) return yogaMaskError(error, message, isDev);
  // Handing Yoga back the same error object tells it this is no unexpected failure worth an error log.
  if (error instanceof GraphQLError && (error.message === known.message || known !== original)) {
    error.message = known.message;
    Object.assign(error.extensions, extensionsOf(known));
    return error;
  }
  return toGraphQLError(known);
};

const databaseUnavailable = () => new CallboardError('DATABASE_UNAVAILABLE', 'The database is unavailable right now; try again in a few seconds.');

function extensionsOf(error: CallboardError) {
  const retryAfterSeconds = error.details.retryAfterSeconds;
  return {
    code: error.code,
    // When to come back, where clients look for it first (RATE_LIMITED, BUDGET_EXCEEDED, PROVIDER_RATE_LIMITED).
    ...(typeof retryAfterSeconds === 'number' ? { retryAfterSeconds } : {}),
    ...(Object.keys(error.details).length > 0 ? { details: error.details } : {}),
  };
}

/**
 * A Callboard error as GraphQL shows it, for the phases whose errors Yoga does not pass through
 * maskError (validation, and results set before execution).
 */
export function toGraphQLError(error: CallboardError): GraphQLError {
  return new GraphQLError(error.message, { extensions: extensionsOf(error) });
}

/**
 * A subscription refused as it starts (FORBIDDEN, TOO_MANY_SUBSCRIPTIONS, BAD_USER_INPUT) is answered
 * as a refused query is: HTTP 200 with its coded errors (over SSE, one `next` event, then `complete`).
 * Its result has no `data`, which Yoga would otherwise answer with a 500.
 */
export function useSubscriptionRefusals(): Plugin {
  return {
    onSubscribe: () => ({
      onSubscribeResult({ result, setResult }) {
        if (isAsyncIterable(result) || !result.errors?.length || 'data' in result) return;
        if (result.errors.every((error) => isCallboardError(error.originalError))) setResult({ ...result, data: null });
      },
    }),
  };
}
