// `callboard/client`: what a dashboard in another project imports (package.json "exports", built into
// dist/client/ by scripts/build.mjs). The typed documents of src/client/operations.graphql with their
// result and variable types, the schema's enums and input types, and a small client.
export * from './generated/graphql.js';
export {
  createCallboardClient,
  CallboardClientError,
  type CallboardClient,
  type CallboardClientOptions,
  type CallboardGraphQLError,
  type RequestOptions,
} from './client.js';
export type { TypedDocumentNode } from '@graphql-typed-document-node/core';

/** How the schema's scalars arrive in results and go in variables (codegen.ts maps them so). */
export interface Scalars {
  ID: string;
  String: string;
  Boolean: boolean;
  Int: number;
  Float: number;
  /** An ISO 8601 date-time at UTC, e.g. `2026-12-02T05:19:01.000Z`. */
  DateTime: string;
  /** Any JSON value (request and response bodies, metadata). */
  JSON: unknown;
  /** An exact decimal number as a string (USD amounts such as costUsd), e.g. `"0.000135"`: add them with a decimal library, not as floats. */
  Decimal: string;
}

/** An ISO 8601 date-time at UTC, as DateTime fields hold it. */
export type DateTime = Scalars['DateTime'];
