import type { CodegenConfig } from '@graphql-codegen/cli';

// Typed operations from the committed schema.graphql: for the tests (test/gql) and for dashboards.
const config: CodegenConfig = {
  schema: 'schema.graphql',
  documents: ['test/**/*.ts', '!test/gql/**'],
  ignoreNoDocuments: true,
  emitLegacyCommonJSImports: false,
  generates: {
    'test/gql/': {
      preset: 'client',
      config: {
        useTypeImports: true,
        scalars: { JSON: 'unknown', DateTime: 'string' },
        enumsAsTypes: true,
      },
      presetConfig: { fragmentMasking: false },
    },
  },
};

export default config;
