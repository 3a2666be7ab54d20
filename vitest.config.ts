import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // Node resolves `graphql` to its CommonJS entry for every package (graphql has no "exports" map);
    // Vite would pick the "module" entry for our files, and two graphql copies cannot share a schema.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // One migrated database (PGlite and Postgres) per run, that every test database is copied from.
    globalSetup: ['test/support/global-setup.ts'],
    // Vitest's default is one worker fewer than the cores: a single one on a 2-core machine, whose second core then
    // mostly idles, as most test files wait on a database, a fake upstream or a child process much of their time.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    // Tests marked concurrent (the server processes') run two at a time: starting a server is CPU work.
    maxConcurrency: 2,
  },
});
