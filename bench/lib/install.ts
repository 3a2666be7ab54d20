import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/*
 * Peers the bench compares Callboard with (Portkey's gateway, gpt-tokenizer) are installed at run
 * time with npm into folders under the system's temporary directory, never into the project.
 */

/**
 * Installs `packages` (exact `name@version` specs) with `npm install --ignore-scripts` into
 * `$TMPDIR/<folderName>` once (kept between runs: delete the folder to reinstall); returns the
 * folder, or throws with npm's complaint (no network, say). `entry` (relative to the folder) is
 * the file whose presence says a previous run installed it; `name@version` of the first spec is
 * checked against the installed package.json.
 */
export function installIntoTemp(folderName: string, packages: string[], entry: string, log: (message: string) => void): string {
  const folder = join(tmpdir(), folderName);
  if (existsSync(join(folder, entry))) return folder;
  log(`installing ${packages.join(' ')} into ${folder} (once; later runs reuse it)`);
  const staging = `${folder}.${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    execFileSync('npm', ['install', '--prefix', staging, '--no-audit', '--no-fund', '--ignore-scripts', '--no-save', ...packages], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 240_000,
      encoding: 'utf8',
    });
    renameSync(staging, folder);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(npmComplaint(error));
  }
  const [name, version] = splitSpec(packages[0]!);
  const installed = JSON.parse(readFileSync(join(folder, 'node_modules', name, 'package.json'), 'utf8')) as { version: string };
  if (installed.version !== version) throw new Error(`npm installed ${name} ${installed.version}, not ${version}`);
  return folder;
}

/** The version npm's registry gives a dist-tag (`latest`) or range of `name`; throws with npm's complaint. */
export function resolveVersion(name: string, tagOrRange: string): string {
  try {
    const output = execFileSync('npm', ['view', `${name}@${tagOrRange}`, 'version', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
      encoding: 'utf8',
    });
    const parsed = JSON.parse(output) as string | string[];
    const version = Array.isArray(parsed) ? parsed.at(-1) : parsed;
    if (!version) throw new Error(`npm knows no version ${tagOrRange} of ${name}`);
    return version;
  } catch (error) {
    throw new Error(npmComplaint(error));
  }
}

function splitSpec(spec: string): [string, string] {
  const at = spec.lastIndexOf('@');
  return [spec.slice(0, at), spec.slice(at + 1)];
}

function npmComplaint(error: unknown): string {
  const stderr = (error as { stderr?: string }).stderr?.trim();
  return stderr ? stderr.split('\n').slice(-5).join('\n') : error instanceof Error ? error.message : String(error);
}
