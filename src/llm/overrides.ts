import { overridableKeys, parseOpenAiValue, type OpenAiConfig } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import type { PrismaClient } from '../db/generated/client.ts';
import { badUserInput } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** One runtime override of an [OpenAI] setting, as stored. */
export interface Override {
  key: string;
  value: string;
  updatedAt: Date;
  updatedBy: string;
}

export interface OverrideChangeRecord {
  id: string;
  key: string;
  oldValue: string | null;
  newValue: string | null;
  changedBy: string;
  changedAt: Date;
}

/**
 * TinyTroupe's force_* levers, kept in the database so every instance and a restart see them:
 * force_api_type is API_TYPE, force_api_cache is CACHE_API_CALLS (and CACHE_FILE_NAME),
 * force_default_value is any [OpenAI] key. Every change is audited.
 */
export interface OverrideStore {
  /** The effective [OpenAI] settings: config.ini and environment, then overrides. Same object until something changes. */
  settings(): OpenAiConfig;
  list(): Override[];
  /** Sets one override; an unknown key or a bad value is BAD_USER_INPUT. */
  set(key: string, value: string, actor: string): Promise<OverrideChangeRecord>;
  /** Removes one override, or all when key is null; returns the changes made. */
  reset(key: string | null, actor: string): Promise<OverrideChangeRecord[]>;
  changes(options: { key?: string | null; first: number }): Promise<OverrideChangeRecord[]>;
  /** Reloads from the database (other instances' changes). */
  refresh(): Promise<void>;
  close(): void;
}

export interface OverrideStoreOptions {
  prisma: PrismaClient;
  /**
   * Reads the overrides at start and every refresh: plain SQL, so that Prisma's query compiler (compiled on
   * Prisma's first query, about 45 MB and half a second) is loaded only when an ADMIN changes a setting.
   */
  query: Database['query'];
  base: OpenAiConfig;
  /** Extra checks on a parsed value (e.g. that an API type is registered); returns a problem or null. */
  validate?: (field: keyof OpenAiConfig, value: unknown) => string | null;
  /** Tells the other instances after a change (they call refresh()). */
  announce?: () => Promise<void>;
  /** How often the database is read again, in case an announcement was missed; 0 disables it. @default 30000 */
  refreshIntervalMs?: number;
  logger: Logger;
}

export async function createOverrideStore(options: OverrideStoreOptions): Promise<OverrideStore> {
  const { prisma, query, base, logger } = options;
  let overrides = new Map<string, Override>();
  let effective: OpenAiConfig = base;

  const parse = (key: string, value: string) => {
    const parsed = parseOpenAiValue(key, value);
    if (!parsed.ok) throw badUserInput(parsed.message, { key });
    const problem = options.validate?.(parsed.field, parsed.value);
    if (problem) throw badUserInput(`${key.toUpperCase()}: ${problem}`, { key });
    return parsed;
  };
  const apply = (rows: Override[]) => {
    const next = new Map(rows.map((row) => [row.key, row]));
    const settings: Record<string, unknown> = { ...base };
    for (const row of next.values()) {
      const parsed = parseOpenAiValue(row.key, row.value);
      // A row written by a newer version, or made invalid by a config change, must not stop the server.
      if (parsed.ok) settings[parsed.field] = parsed.value;
      else logger.warn({ key: row.key }, `ignoring a stored override: ${parsed.message}`);
    }
    overrides = next;
    effective = settings as unknown as OpenAiConfig;
  };
  const load = async () => {
    const rows = await query<{ key: string; value: unknown; updatedAt: Date; updatedBy: string }>(
      'SELECT "key", "value", "updatedAt", "updatedBy" FROM "RuntimeOverride" ORDER BY "key"',
    );
    const unchanged =
      rows.length === overrides.size && rows.every((row) => overrides.get(row.key)?.updatedAt.getTime() === row.updatedAt.getTime() && overrides.get(row.key)?.value === String(row.value));
    if (!unchanged) apply(rows.map((row) => ({ key: row.key, value: String(row.value), updatedAt: row.updatedAt, updatedBy: row.updatedBy })));
  };
  const toRecord = (row: { id: string; key: string; oldValue: unknown; newValue: unknown; changedBy: string; changedAt: Date }): OverrideChangeRecord => ({
    id: row.id,
    key: row.key,
    oldValue: row.oldValue === null ? null : String(row.oldValue),
    newValue: row.newValue === null ? null : String(row.newValue),
    changedBy: row.changedBy,
    changedAt: row.changedAt,
  });

  await load();
  const interval = options.refreshIntervalMs ?? 30_000;
  const changed = async () => {
    await load();
    await options.announce?.().catch((error: unknown) => logger.warn({ err: error }, 'could not announce an override change'));
  };
  const timer =
    interval > 0
      ? setInterval(() => load().catch((error: unknown) => logger.warn({ err: error }, 'could not refresh runtime overrides')), interval).unref()
      : undefined;

  return {
    settings: () => effective,
    list: () => [...overrides.values()],
    async set(rawKey, value, actor) {
      const key = rawKey.trim().toUpperCase();
      parse(key, value);
      const change = await prisma.$transaction(async (transaction) => {
        const previous = await transaction.runtimeOverride.findUnique({ where: { key } });
        await transaction.runtimeOverride.upsert({
          where: { key },
          create: { key, value, updatedBy: actor },
          update: { value, updatedBy: actor },
        });
        return transaction.overrideChange.create({
          data: { key, oldValue: previous === null ? undefined : (previous.value as string), newValue: value, changedBy: actor },
        });
      });
      await changed();
      return toRecord(change);
    },
    async reset(rawKey, actor) {
      const key = rawKey?.trim().toUpperCase() ?? null;
      if (key !== null && !overridableKeys.includes(key)) throw badUserInput(`unknown key "${rawKey}"; known keys: ${overridableKeys.join(', ')}`, { key: rawKey });
      const changes = await prisma.$transaction(async (transaction) => {
        const rows = await transaction.runtimeOverride.findMany({ where: key === null ? {} : { key } });
        await transaction.runtimeOverride.deleteMany({ where: { key: { in: rows.map((row) => row.key) } } });
        return Promise.all(
          rows.map((row) => transaction.overrideChange.create({ data: { key: row.key, oldValue: row.value as string, changedBy: actor } })),
        );
      });
      await changed();
      return changes.map(toRecord);
    },
    async changes({ key, first }) {
      const rows = await prisma.overrideChange.findMany({
        where: key ? { key: key.toUpperCase() } : {},
        orderBy: [{ changedAt: 'desc' }, { id: 'desc' }],
        take: first,
      });
      return rows.map(toRecord);
    },
    refresh: load,
    close: () => clearInterval(timer),
  };
}
