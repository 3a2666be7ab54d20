import { createHash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { newId } from '../ids.ts';
import type { Database } from '../db/database.ts';
import { badUserInput, CallboardError } from '../errors.ts';
import { formatPicoUsd, parseDecimal, picoUsdOf, usdOrNull } from '../money.ts';
import { noLimits, type KeyLimits } from './limits.ts';

/** The largest USD budget a key may have. */
const maxBudget = picoUsdOf('1000000000');

export type ApiKeyRole = 'ADMIN' | 'MEMBER' | 'VIEWER';
export const apiKeyRoles: readonly ApiKeyRole[] = ['ADMIN', 'MEMBER', 'VIEWER'];


/** An API key as stored: never the key itself, only its hash and a short prefix. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  role: ApiKeyRole;
  tenant: string;
  prefix: string;
  limits: KeyLimits;
  createdAt: Date;
  createdBy: string;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
  expiresAt: Date | null;
}

export interface CreateKeyInput {
  name: string;
  role: ApiKeyRole;
  tenant: string;
  limits?: Partial<KeyLimits> | null;
  expiresAt?: Date | null;
}

export interface UpdateKeyInput {
  name?: string | null;
  limits?: Partial<KeyLimits> | null;
  /** null clears the expiry; undefined leaves it. */
  expiresAt?: Date | null;
}

export interface KeyPage {
  keys: ApiKeyRecord[];
  hasNextPage: boolean;
}

export interface KeyStore {
  /** Creates a key; the secret is returned this once and never stored. */
  create(input: CreateKeyInput, actor: string): Promise<{ key: string; record: ApiKeyRecord }>;
  update(id: string, input: UpdateKeyInput, actor: string, tenant: string | null): Promise<ApiKeyRecord>;
  revoke(id: string, actor: string, tenant: string | null): Promise<ApiKeyRecord>;
  get(id: string, tenant: string | null): Promise<ApiKeyRecord | null>;
  /** Newest first, keyset-paginated by id (uuid v7 sorts by creation). `tenant` null: every tenant. */
  list(options: { tenant: string | null; first: number; after?: string | null; includeRevoked?: boolean }): Promise<KeyPage>;
  count(options: { tenant: string | null; includeRevoked?: boolean }): Promise<number>;
  /**
   * The usable key a presented secret belongs to, or null (unknown, revoked, expired). Looked up by
   * its hash through a unique index; a found key is remembered for at most `cacheMs`, so a revocation
   * on any instance takes effect everywhere within that time.
   */
  authenticate(secret: string): Promise<ApiKeyRecord | null>;
  /** Forgets remembered lookups (all, or one key's), e.g. after a change announced by another instance. */
  forget(id?: string): void;
}

/** The NOTIFY channel that tells every instance a key changed (its payload: the key id). */
export const keyChangedChannel = 'callboard_key_changed';

const keyPrefix = 'cb_';

/** Looks like a key Callboard makes (whether or not it exists). */
export const isCallboardKey = (secret: string) => secret.startsWith(keyPrefix);
const shownPrefixLength = 10;
const maxName = 200;
const maxTenant = 100;

/** SHA-256 of a key, hex: what the database keeps. */
function hashKey(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new secret: the `cb_` prefix and 256 random bits, base64url. */
function generateKey(): string {
  return `${keyPrefix}${randomBytes(32).toString('base64url')}`;
}

interface KeyRow {
  id: string;
  name: string;
  role: ApiKeyRole;
  tenant: string;
  prefix: string;
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
  /** numeric, as text. */
  usdPerDay: string | null;
  usdPerMonth: string | null;
  createdAt: Date | string;
  createdBy: string;
  lastUsedAt: Date | string | null;
  revokedAt: Date | string | null;
  expiresAt: Date | string | null;
}

const columns = `"id", "name", "role"::text AS "role", "tenant", "prefix", "requestsPerMinute", "tokensPerMinute", "usdPerDay", "usdPerMonth",
  "createdAt", "createdBy", "lastUsedAt", "revokedAt", "expiresAt"`;

const dateOrNull = (value: Date | string | null) => (value === null ? null : new Date(value));

function fromRow(row: KeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    tenant: row.tenant,
    prefix: row.prefix,
    limits: {
      requestsPerMinute: row.requestsPerMinute,
      tokensPerMinute: row.tokensPerMinute,
      usdPerDay: usdOrNull(row.usdPerDay),
      usdPerMonth: usdOrNull(row.usdPerMonth),
    },
    createdAt: new Date(row.createdAt),
    createdBy: row.createdBy,
    lastUsedAt: dateOrNull(row.lastUsedAt),
    revokedAt: dateOrNull(row.revokedAt),
    expiresAt: dateOrNull(row.expiresAt),
  };
}

function isUsable(record: ApiKeyRecord, now: number): boolean {
  return record.revokedAt === null && (record.expiresAt === null || record.expiresAt.getTime() > now);
}

function checkedLimits(limits: Partial<KeyLimits> | null | undefined): Partial<KeyLimits> {
  const checked: Partial<KeyLimits> = {};
  for (const field of ['requestsPerMinute', 'tokensPerMinute'] as const) {
    const value = limits?.[field];
    if (value === undefined) continue;
    if (value !== null && (!Number.isInteger(value) || value < 1 || value > 1e9)) throw badUserInput(`limits.${field} must be a whole number from 1 to 1000000000, or null.`, { field: `limits.${field}` });
    checked[field] = value;
  }
  for (const field of ['usdPerDay', 'usdPerMonth'] as const) {
    const value = limits?.[field];
    if (value === undefined) continue;
    const amount = value === null ? null : parseDecimal(String(value));
    if (value !== null && (amount === null || amount < 0n || amount > maxBudget)) {
      throw badUserInput(`limits.${field} must be a decimal string from "0" to "1000000000" USD (at most 12 decimals), or null.`, { field: `limits.${field}` });
    }
    checked[field] = amount === null ? null : formatPicoUsd(amount);
  }
  return checked;
}

function checkedName(name: string): string {
  const trimmed = name.trim();
  if (trimmed === '' || trimmed.length > maxName) throw badUserInput(`name must be 1 to ${maxName} characters.`, { field: 'name' });
  return trimmed;
}

/** Tenants are names a person types and a URL or a label can carry: letters, digits, `.`, `_`, `-`. */
function checkedTenant(tenant: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(tenant) || tenant.length > maxTenant) {
    throw badUserInput(`tenant must be 1 to ${maxTenant} letters, digits, ".", "_" or "-".`, { field: 'tenant' });
  }
  return tenant;
}

function checkedExpiry(expiresAt: Date | null | undefined, now: number): Date | null | undefined {
  if (expiresAt && expiresAt.getTime() <= now) throw badUserInput('expiresAt must be in the future.', { field: 'expiresAt' });
  return expiresAt;
}

const notFound = (id: string) => new CallboardError('NOT_FOUND', `No API key with id ${id}.`, { details: { id } });
const isUuid = (value: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value);

export interface KeyStoreOptions {
  database: Pick<Database, 'query'>;
  /** How long a looked-up key is trusted before it is read again. @default 1000 */
  cacheMs?: number;
  /** How often lastUsedAt is written for a key in use. @default 60000 */
  lastUsedIntervalMs?: number;
  now?: () => number;
}

export function createKeyStore(options: KeyStoreOptions): KeyStore {
  const { database } = options;
  const now = options.now ?? Date.now;
  const cacheMs = options.cacheMs ?? 1000;
  const lastUsedIntervalMs = options.lastUsedIntervalMs ?? 60_000;
  // Unknown secrets are remembered too, so a flood of bad keys costs no more than one lookup a second each.
  const lookups = new LRUCache<string, { record: ApiKeyRecord | null; at: number }>({ max: 10_000 });
  const lastUsedWritten = new Map<string, number>();

  const audit = (apiKeyId: string, action: string, changes: unknown, actor: string) =>
    database.query('INSERT INTO "ApiKeyChange" ("id", "apiKeyId", "action", "changes", "changedBy") VALUES ($1, $2, $3, $4, $5)', [
      newId(),
      apiKeyId,
      action,
      JSON.stringify(changes),
      actor,
    ]);

  async function get(id: string, tenant: string | null): Promise<ApiKeyRecord | null> {
    if (!isUuid(id)) return null;
    const [row] = await database.query<KeyRow>(`SELECT ${columns} FROM "ApiKey" WHERE "id" = $1 AND ($2::text IS NULL OR "tenant" = $2)`, [id, tenant]);
    return row ? fromRow(row) : null;
  }

  function touch(record: ApiKeyRecord): void {
    const at = now();
    if (at - (lastUsedWritten.get(record.id) ?? 0) < lastUsedIntervalMs) return;
    lastUsedWritten.set(record.id, at);
    // Off the caller's path: a missed write only makes lastUsedAt a minute older.
    void database.query('UPDATE "ApiKey" SET "lastUsedAt" = $2 WHERE "id" = $1', [record.id, new Date(at)]).catch(() => lastUsedWritten.delete(record.id));
  }

  return {
    async create(input, actor) {
      const name = checkedName(input.name);
      const tenant = checkedTenant(input.tenant);
      const limits = { ...noLimits, ...checkedLimits(input.limits) };
      const expiresAt = checkedExpiry(input.expiresAt, now()) ?? null;
      const key = generateKey();
      const id = newId();
      const [row] = await database.query<KeyRow>(
        `WITH created AS (
           INSERT INTO "ApiKey" ("id", "name", "role", "tenant", "prefix", "hash", "requestsPerMinute", "tokensPerMinute", "usdPerDay", "usdPerMonth", "createdBy", "expiresAt")
           VALUES ($1, $2, $3::"ApiKeyRole", $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ${columns}
         ), usage AS (INSERT INTO "ApiKeyUsage" ("apiKeyId") SELECT "id" FROM created)
         SELECT * FROM created`,
        [id, name, input.role, tenant, key.slice(0, shownPrefixLength), hashKey(key), limits.requestsPerMinute, limits.tokensPerMinute, limits.usdPerDay, limits.usdPerMonth, actor, expiresAt],
      );
      await audit(id, 'CREATE', { name, role: input.role, tenant, limits, expiresAt }, actor);
      return { key, record: fromRow(row!) };
    },
    async update(id, input, actor, tenant) {
      const existing = await get(id, tenant);
      if (!existing) throw notFound(id);
      const name = input.name === undefined || input.name === null ? existing.name : checkedName(input.name);
      const limits = { ...existing.limits, ...checkedLimits(input.limits) };
      const expiresAt = input.expiresAt === undefined ? existing.expiresAt : checkedExpiry(input.expiresAt, now()) ?? null;
      const [row] = await database.query<KeyRow>(
        `UPDATE "ApiKey" SET "name" = $2, "requestsPerMinute" = $3, "tokensPerMinute" = $4, "usdPerDay" = $5, "usdPerMonth" = $6, "expiresAt" = $7
         WHERE "id" = $1 RETURNING ${columns}`,
        [id, name, limits.requestsPerMinute, limits.tokensPerMinute, limits.usdPerDay, limits.usdPerMonth, expiresAt],
      );
      await audit(id, 'UPDATE', { name, limits, expiresAt }, actor);
      return fromRow(row!);
    },
    async revoke(id, actor, tenant) {
      const existing = await get(id, tenant);
      if (!existing) throw notFound(id);
      if (existing.revokedAt !== null) return existing;
      const [row] = await database.query<KeyRow>(`UPDATE "ApiKey" SET "revokedAt" = $2 WHERE "id" = $1 RETURNING ${columns}`, [id, new Date(now())]);
      await audit(id, 'REVOKE', null, actor);
      return fromRow(row!);
    },
    get,
    async list({ tenant, first, after, includeRevoked = true }) {
      const rows = await database.query<KeyRow>(
        `SELECT ${columns} FROM "ApiKey"
         WHERE ($1::text IS NULL OR "tenant" = $1) AND ($2::uuid IS NULL OR "id" < $2) AND ($3 OR "revokedAt" IS NULL)
         ORDER BY "id" DESC LIMIT $4`,
        [tenant, after && isUuid(after) ? after : null, includeRevoked, first + 1],
      );
      return { keys: rows.slice(0, first).map(fromRow), hasNextPage: rows.length > first };
    },
    async count({ tenant, includeRevoked = true }) {
      const [row] = await database.query<{ count: string | number }>(
        `SELECT count(*) AS "count" FROM "ApiKey" WHERE ($1::text IS NULL OR "tenant" = $1) AND ($2 OR "revokedAt" IS NULL)`,
        [tenant, includeRevoked],
      );
      return Number(row!.count);
    },
    async authenticate(secret) {
      if (!secret.startsWith(keyPrefix) || secret.length > 200) return null;
      const hash = hashKey(secret);
      const at = now();
      let found = lookups.get(hash);
      if (!found || at - found.at >= cacheMs) {
        const [row] = await database.query<KeyRow>(`SELECT ${columns} FROM "ApiKey" WHERE "hash" = $1`, [hash]);
        found = { record: row ? fromRow(row) : null, at };
        lookups.set(hash, found);
      }
      if (!found.record || !isUsable(found.record, at)) return null;
      touch(found.record);
      return found.record;
    },
    forget(id) {
      if (id === undefined) lookups.clear();
      else for (const [hash, found] of lookups.entries()) if (found.record?.id === id) lookups.delete(hash);
    },
  };
}
