import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { withClient } from './database.ts';

const run = promisify(execFile);

/**
 * A Postgres cluster of the test's own, which it may stop and start (an outage) without touching
 * the machine's shared server on 5432. Debian's postgresql-common makes one in about 3 s, as root.
 */
export interface ThrowawayPostgres {
  name: string;
  port: number;
  /** The URL of the `callboard` database on it. */
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops the cluster and deletes it with its data. */
  dispose(): Promise<void>;
}

/** Why a throw-away cluster cannot be made here, or null when it can. */
export function throwawayPostgresUnsupported(): string | null {
  if (process.getuid?.() !== 0) return 'making a Postgres cluster needs root';
  if (!existsSync('/usr/bin/pg_createcluster')) return 'pg_createcluster (postgresql-common) is not installed';
  if (postgresVersion() === null) return 'no Postgres version under /etc/postgresql';
  return null;
}

function postgresVersion(): string | null {
  try {
    return readdirSync('/etc/postgresql').filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a))[0] ?? null;
  } catch {
    return null;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startThrowawayPostgres(): Promise<ThrowawayPostgres> {
  const version = postgresVersion()!;
  const name = `callboard_${randomBytes(4).toString('hex')}`;
  const port = await freePort();
  const control = (action: 'start' | 'stop') =>
    // Without --skip-systemctl-redirect, pg_ctlcluster asks systemd, which these machines may not run.
    run('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, action, ...(action === 'stop' ? ['-m', 'fast'] : [])]).then(() => {});
  await run('pg_createcluster', [version, name, '--port', String(port), '--', '--auth=trust']);
  try {
    await control('start');
    const adminUrl = `postgresql://postgres@127.0.0.1:${port}/postgres`;
    await withClient(adminUrl, (client) => client.query('CREATE DATABASE callboard'));
  } catch (error) {
    await run('pg_dropcluster', [version, name, '--stop']).catch(() => {});
    throw error;
  }
  return {
    name,
    port,
    url: `postgresql://postgres@127.0.0.1:${port}/callboard`,
    stop: () => control('stop'),
    start: () => control('start'),
    dispose: () => run('pg_dropcluster', [version, name, '--stop']).then(() => {}),
  };
}
