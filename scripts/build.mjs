// Compiles the server to dist/, so that `npm start` runs plain JavaScript: TypeScript checks the
// sources (tsconfig.build.json), then esbuild bundles src/main.ts and what it imports, packages
// included, into dist/main.js. One file starts in half the time of hundreds of modules (Node.js
// resolves, reads and links each one). What is imported dynamically (GraphiQL's page, Prisma's query
// compiler) becomes a chunk of its own in dist/chunks/, read only when first needed; PGlite stays
// in node_modules (it finds its WebAssembly and data files next to its own modules). The dashboard
// (src/dashboard/, for browsers) is bundled apart into dist/dashboard/ (buildDashboard below), from
// the typed operations codegen writes into src/client/generated/ (run here when missing or older).
//   node scripts/build.mjs             generates the Prisma client, then compiles
//   node scripts/build.mjs --if-stale  does nothing when dist/ was built from the sources as they are
// `npm start` runs the second form: a checkout updated without `npm install` (git pull) must not
// start yesterday's code. The check hashes contents, not times: `npm test` rewrites the generated
// client with the same bytes, which must not count as a change.
// It also builds the client package, `callboard/client` (package.json "exports"): the typed
// operations (above) and the small client, bundled by esbuild into dist/client/index.js (graphql's
// printer included: nothing to install beside it), with declarations written by `tsc -p
// tsconfig.client.json` into dist/client/*.d.ts.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const stampPath = join(root, 'dist', '.sources-hash');
const schemaPath = join(root, 'prisma', 'schema.prisma');
const clientPath = join(root, 'src', 'db', 'generated', 'client.ts');
const operationsPath = join(root, 'src', 'client', 'generated', 'graphql.ts');
const operationSources = ['schema.graphql', 'src/client/operations.graphql', 'codegen.ts'].map((path) => join(root, path));

/** Every file the compiled output depends on, in a stable order: what tsconfig.build.json compiles and its settings. */
function inputs() {
  const files = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.client.json', 'prisma/schema.prisma', 'schema.graphql', 'codegen.ts', 'src/client/operations.graphql'];
  const walk = (dir) => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(path);
      else if (!path.endsWith('.test.ts') && (path.endsWith('.ts') || path.startsWith('src/dashboard/'))) files.push(path);
    }
  };
  walk('src');
  // The typed operations (src/client/generated/, not committed) follow from schema.graphql, the operations and codegen.ts.
  return files.filter((path) => !path.startsWith('src/client/generated/'));
}

function sourcesHash() {
  const hash = createHash('sha256');
  for (const path of inputs()) hash.update(`${path}\0`).update(readFileSync(join(root, path))).update('\0');
  return hash.digest('hex');
}

/** Runs a Node.js script; `quiet`: its output is shown only when it fails (the code generator's progress lines). */
function run(args, what, { quiet = false } = {}) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: quiet ? ['ignore', 'pipe', 'pipe'] : 'inherit', encoding: 'utf8' });
  if (result.status !== 0) {
    if (quiet) process.stderr.write(`${result.stdout}${result.stderr}`);
    console.error(`build: ${what} failed`);
    process.exit(result.status ?? 1);
  }
}

const ifStale = process.argv.includes('--if-stale');
const stamp = existsSync(stampPath) ? readFileSync(stampPath, 'utf8') : null;
if (ifStale && existsSync(clientPath) && stamp === sourcesHash()) process.exit(0);
if (ifStale) console.error('build: dist/ is missing or older than the sources, building it (npm run build)');

// While `npm test` runs, test files import the generated client: regenerate it only when the
// schema is newer (or it is missing), unless asked for a full build.
if (!ifStale || !existsSync(clientPath) || statSync(schemaPath).mtimeMs > statSync(clientPath).mtimeMs) {
  run([join(root, 'scripts', 'prisma-generate.mjs')], 'prisma generate');
}
const require = createRequire(import.meta.url);
let tsc;
let codegen;
let esbuild;
try {
  tsc = join(require.resolve('typescript/package.json'), '..', 'bin', 'tsc');
  codegen = join(require.resolve('@graphql-codegen/cli/package.json'), '..', 'esm', 'bin.js');
  esbuild = await import('esbuild');
} catch {
  console.error('build: TypeScript, GraphQL Code Generator or esbuild is not installed (npm install --omit=dev?). Build dist/ where the dev dependencies are installed: npm run build.');
  process.exit(1);
}
// The dashboard and the client package import the typed operations codegen writes from src/client/operations.graphql.
const newestSource = Math.max(...operationSources.map((path) => statSync(path).mtimeMs));
if (!ifStale || !existsSync(operationsPath) || newestSource > statSync(operationsPath).mtimeMs) {
  run([codegen, '--config', join(root, 'codegen.ts')], 'graphql-codegen (npm run codegen)', { quiet: true });
}
run([tsc, '-p', join(root, 'tsconfig.build.json')], 'tsc -p tsconfig.build.json');
// Files of removed sources must not linger in dist/.
rmSync(join(root, 'dist'), { recursive: true, force: true });
try {
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: ['src/main.ts'],
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20.19',
    // dist/main.js finds the project's config.ini and prisma/migrations at `..`, as src/main.ts does.
    outdir: 'dist',
    entryNames: '[name]',
    chunkNames: 'chunks/[name]-[hash]',
    // PGlite reads files next to its modules; pg-native is pg's optional native driver, not installed.
    external: ['@electric-sql/pglite', 'pglite-prisma-adapter', 'pg-native'],
    // CommonJS packages in an ES module bundle still call require() for Node.js's own modules.
    banner: { js: "import { createRequire as __callboardCreateRequire } from 'node:module'; const require = __callboardCreateRequire(import.meta.url);" },
    logLevel: 'warning',
  });
  // The client package: for browsers and Node.js alike, one module without imports.
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: ['src/client/index.ts'],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    target: 'es2022',
    outfile: 'dist/client/index.js',
    logLevel: 'warning',
  });
} catch {
  console.error('build: esbuild failed');
  process.exit(1);
}
try {
  await buildDashboard(esbuild);
} catch (error) {
  console.error(`build: the dashboard failed: ${error.message}`);
  process.exit(1);
}
run([tsc, '-p', join(root, 'tsconfig.client.json')], 'tsc -p tsconfig.client.json');
writeFileSync(stampPath, sourcesHash());

/**
 * The dashboard (src/dashboard/, Preact and uPlot) for browsers: one script and one style sheet
 * with content-hashed names in dist/dashboard/assets/ (served as immutable), and the page,
 * dist/dashboard/index.html, that names them. Nothing is loaded from another host.
 */
async function buildDashboard(esbuild) {
  const outdir = join(root, 'dist', 'dashboard');
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: ['src/dashboard/main.tsx'],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome109', 'firefox115', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    sourcemap: false,
    legalComments: 'linked',
    define: { 'process.env.NODE_ENV': '"production"' },
    outdir: join(outdir, 'assets'),
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    metafile: true,
    logLevel: 'warning',
  });
  const outputs = Object.keys(result.metafile.outputs).map((path) => path.slice(path.lastIndexOf('/') + 1));
  const script = outputs.find((name) => /^main-.*\.js$/.test(name));
  const styles = outputs.find((name) => /^main-.*\.css$/.test(name));
  if (!script || !styles) throw new Error(`unexpected outputs: ${outputs.join(', ')}`);
  const page = readFileSync(join(root, 'src', 'dashboard', 'index.html'), 'utf8')
    .replace('{{js}}', `/dashboard/assets/${script}`)
    .replace('{{css}}', `/dashboard/assets/${styles}`);
  writeFileSync(join(outdir, 'index.html'), page);
}
