import type { CodegenConfig } from '@graphql-codegen/cli';

const sharedConfig = {
  useTypeImports: true,
  scalars: { JSON: 'unknown', DateTime: 'string', Decimal: 'string' },
  enumsAsTypes: true,
};

// Typed operations from the committed schema.graphql: for the tests (test/gql/, from the graphql()
// calls in test files) and for dashboards (src/client/generated/, from src/client/operations.graphql).
const config: CodegenConfig = {
  schema: 'schema.graphql',
  ignoreNoDocuments: true,
  emitLegacyCommonJSImports: false,
  generates: {
    'test/gql/': {
      documents: ['test/**/*.ts', '!test/gql/**'],
      preset: 'client',
      config: sharedConfig,
      presetConfig: { fragmentMasking: false },
    },
    'src/client/generated/': {
      documents: ['src/client/operations.graphql'],
      preset: 'client',
      config: sharedConfig,
      presetConfig: { fragmentMasking: false },
    },
  },
};

export default config;
