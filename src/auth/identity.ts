import { createHash, timingSafeEqual } from 'node:crypto';
import { CallboardError } from '../errors.ts';
import { isCallboardKey, type ApiKeyRecord, type ApiKeyRole, type KeyStore } from './keys.ts';
import { noLimits, type KeyLimits } from './limits.ts';

/** The tenant of open mode and of the master key's own calls. */
export const defaultTenant = 'default';

/**
 * Who is calling, decided once per request at the door: every read and write below is scoped by it.
 * `tenant` is where the caller's calls are recorded; `allTenants` says whether it reads every tenant.
 */
export interface Identity {
  kind: 'open' | 'master' | 'key';
  role: ApiKeyRole;
  tenant: string;
  allTenants: boolean;
  /** The API key; null for the master key and open mode. */
  apiKey: ApiKeyRecord | null;
  limits: KeyLimits;
  /** How the audit names this caller. */
  label: string;
}

/** Each role holds the ones below it. */
export const roleRank: Record<ApiKeyRole, number> = { VIEWER: 0, MEMBER: 1, ADMIN: 2 };

/** True when the caller's role is `role` or above. */
export function holdsRole(identity: Pick<Identity, 'role'>, role: ApiKeyRole): boolean {
  return roleRank[identity.role] >= roleRank[role];
}

/** The identity as the LLM client records and limits calls: its tenant, key and limits. */
export function callerOf(identity: Identity): { tenant: string; apiKeyId: string | null; limits: KeyLimits } {
  return { tenant: identity.tenant, apiKeyId: identity.apiKey?.id ?? null, limits: identity.limits };
}

/** The tenant a caller's reads are limited to; null: every tenant (ADMIN). */
export function readScope(identity: Identity): string | null {
  return identity.allTenants ? null : identity.tenant;
}

const openIdentity: Identity = {
  kind: 'open',
  role: 'ADMIN',
  tenant: defaultTenant,
  // An ADMIN, and ADMINs see every tenant: open mode is the single-team machine, bound to loopback.
  allTenants: true,
  apiKey: null,
  limits: noLimits,
  label: 'open mode',
};

const masterIdentity: Identity = {
  kind: 'master',
  role: 'ADMIN',
  tenant: defaultTenant,
  allTenants: true,
  apiKey: null,
  limits: noLimits,
  label: 'master key',
};

function identityOfKey(record: ApiKeyRecord): Identity {
  return {
    kind: 'key',
    role: record.role,
    tenant: record.tenant,
    // An ADMIN sees and manages every tenant; MEMBER and VIEWER only their own.
    allTenants: record.role === 'ADMIN',
    apiKey: record,
    limits: record.limits,
    label: `key ${record.prefix}… "${record.name}" (${record.id})`,
  };
}

function unauthenticated(message: string): CallboardError {
  return new CallboardError('UNAUTHENTICATED', message);
}

export interface Authenticator {
  /** True when no master key is set: requests without a key act as an ADMIN of `default`. */
  openMode: boolean;
  /** The identity of a request's Authorization header, or UNAUTHENTICATED. */
  authenticate(authorization: string | null): Promise<Identity>;
}

const digest = (value: string) => createHash('sha256').update(value).digest();

export function createAuthenticator(options: { masterKey: string | null; keys: Pick<KeyStore, 'authenticate'> }): Authenticator {
  const masterDigest = options.masterKey === null ? null : digest(options.masterKey);
  return {
    openMode: masterDigest === null,
    async authenticate(authorization) {
      // Other schemes (Basic, which a browser attaches by itself) are not Callboard's credentials.
      const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
      if (!match) {
        if (masterDigest === null) return openIdentity;
        throw unauthenticated('This server needs an API key: send "Authorization: Bearer <key>".');
      }
      const secret = match[1]!;
      // The openai SDKs always send a key (often the caller's own OPENAI_API_KEY): in open mode, only a
      // Callboard key is read as one, so that unchanged code works; a wrong Callboard key is still refused.
      if (masterDigest === null && !isCallboardKey(secret)) return openIdentity;
      // Digests of equal length, compared in constant time: the comparison tells nothing of the master key.
      if (masterDigest !== null && timingSafeEqual(digest(secret), masterDigest)) return masterIdentity;
      const record = await options.keys.authenticate(secret);
      if (record) return identityOfKey(record);
      throw unauthenticated('Unknown, revoked or expired API key.');
    },
  };
}
