import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

// Files that measure time (a /health latency while a long count runs, calls paced at 50 a second against rate
// limits, the few seconds a stopping server may take) or start server processes: they run after the others, one at
// a time, so that a second test file never takes the CPU they measure with.
const alone = [
  'test/e2e/server-process.test.ts',
  'test/reliability/hostile-inputs.test.ts',
  'test/reliability/upstream-faults.test.ts',
  'test/reliability/database-outage.test.ts',
];

export default defineConfig({
  resolve: {
    // Node resolves `graphql` to its CommonJS entry for every package (graphql has no "exports" map);
    // Vite would pick the "module" entry for our files, and two graphql copies cannot share a schema.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // One migrated database (PGlite and Postgres) per run, that every test database is copied from.
    globalSetup: ['test/support/global-setup.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'parallel',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: alone,
          // Vitest's default is one worker fewer than the cores: a single one on a 2-core machine, whose second core
          // then mostly idles, as most test files wait on a database, a fake upstream or a browser much of their time.
          maxWorkers: Math.max(2, availableParallelism() - 1),
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: { name: 'alone', include: alone, maxWorkers: 1, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
