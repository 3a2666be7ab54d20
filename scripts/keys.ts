// API keys from the command line, for a machine with no key yet: `npm run keys -- create --name ops --role ADMIN --tenant default`.
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { apiKeyRoles, createKeyStore, keyChangedChannel, type ApiKeyRole } from '../src/auth/keys.ts';
import { loadConfig } from '../src/config/config.ts';
import { readConfigFiles } from '../src/config/files.ts';
import { createDatabase } from '../src/db/database.ts';
import { migrate, readMigrations } from '../src/db/migrate.ts';
import { isCallboardError } from '../src/errors.ts';

const usage = `Usage:
  npm run keys -- create --name <name> --role ADMIN|MEMBER|VIEWER --tenant <tenant> [--rpm N] [--tpm N] [--usd-per-day X] [--usd-per-month X] [--expires <ISO date>]
  npm run keys -- list [--tenant <tenant>]
  npm run keys -- revoke <id>
With the embedded database (no DATABASE_URL), stop the server first: only one process can open its folder.`;

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const actor = `command line (${process.env.USER ?? 'unknown user'})`;

async function run(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      role: { type: 'string' },
      tenant: { type: 'string' },
      rpm: { type: 'string' },
      tpm: { type: 'string' },
      'usd-per-day': { type: 'string' },
      'usd-per-month': { type: 'string' },
      expires: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command || !['create', 'list', 'revoke'].includes(command)) {
    console.log(usage);
    return values.help ? 0 : 2;
  }
  const { config } = loadConfig(readConfigFiles(process.env, repositoryRoot), process.env);
  const database = await createDatabase({ url: config.database.url, dataDir: resolve(config.database.dataDir) });
  try {
    await migrate(database, await readMigrations(resolve(repositoryRoot, 'prisma/migrations')));
    const keys = createKeyStore({ database });
    if (command === 'create') {
      const role = values.role?.toUpperCase() as ApiKeyRole | undefined;
      if (!values.name || !values.tenant || !role || !apiKeyRoles.includes(role)) {
        console.error(`create needs --name, --tenant and --role (${apiKeyRoles.join(', ')}).\n\n${usage}`);
        return 2;
      }
      const number = (value: string | undefined) => (value === undefined ? null : Number(value));
      const { key, record } = await keys.create(
        {
          name: values.name,
          role,
          tenant: values.tenant,
          limits: { requestsPerMinute: number(values.rpm), tokensPerMinute: number(values.tpm), usdPerDay: values['usd-per-day'] ?? null, usdPerMonth: values['usd-per-month'] ?? null },
          expiresAt: values.expires ? new Date(values.expires) : null,
        },
        actor,
      );
      console.log(`Created ${record.role} key "${record.name}" for tenant ${record.tenant} (id ${record.id}).`);
      console.log('The key, shown this once (Callboard keeps only its hash):');
      console.log(key);
      return 0;
    }
    if (command === 'list') {
      const page = await keys.list({ tenant: values.tenant ?? null, first: 1000 });
      console.table(
        page.keys.map((key) => ({
          id: key.id,
          name: key.name,
          role: key.role,
          tenant: key.tenant,
          prefix: key.prefix,
          created: key.createdAt.toISOString(),
          lastUsed: key.lastUsedAt?.toISOString() ?? '',
          revoked: key.revokedAt?.toISOString() ?? '',
          expires: key.expiresAt?.toISOString() ?? '',
        })),
      );
      return 0;
    }
    const id = rest[0];
    if (!id) {
      console.error(`revoke needs the key id.\n\n${usage}`);
      return 2;
    }
    const record = await keys.revoke(id, actor, null);
    await database.notify(keyChangedChannel, record.id);
    console.log(`Revoked key "${record.name}" (${record.id}) at ${record.revokedAt!.toISOString()}.`);
    return 0;
  } finally {
    await database.close();
  }
}

run().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(isCallboardError(error) ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
