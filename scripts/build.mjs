// Compiles the server to dist/ (tsconfig.build.json), so that `npm start` runs plain JavaScript.
//   node scripts/build.mjs             generates the Prisma client, then compiles
//   node scripts/build.mjs --if-stale  does nothing when dist/ was built from the sources as they are
// `npm start` runs the second form: a checkout updated without `npm install` (git pull) must not
// start yesterday's code. The check hashes contents, not times: `npm test` rewrites the generated
// client with the same bytes, which must not count as a change.
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

/** Every file the compiled output depends on, in a stable order: what tsconfig.build.json compiles and its settings. */
function inputs() {
  const files = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'prisma/schema.prisma'];
  const walk = (dir) => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith('.ts') && !path.endsWith('.test.ts')) files.push(path);
    }
  };
  walk('src');
  return files.filter((path) => !path.startsWith('src/client/'));
}

function sourcesHash() {
  const hash = createHash('sha256');
  for (const path of inputs()) hash.update(`${path}\0`).update(readFileSync(join(root, path))).update('\0');
  return hash.digest('hex');
}

function run(args, what) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
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
let tsc;
try {
  tsc = join(createRequire(import.meta.url).resolve('typescript/package.json'), '..', 'bin', 'tsc');
} catch {
  console.error('build: TypeScript is not installed (npm install --omit=dev?). Build dist/ where the dev dependencies are installed: npm run build.');
  process.exit(1);
}
// Files of removed sources must not linger in dist/.
rmSync(join(root, 'dist'), { recursive: true, force: true });
run([tsc, '-p', join(root, 'tsconfig.build.json')], 'tsc -p tsconfig.build.json');
writeFileSync(stampPath, sourcesHash());
