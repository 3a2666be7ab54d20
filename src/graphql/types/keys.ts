import type { ApiKeyRecord } from '../../auth/keys.ts';
import type { KeyUsage } from '../../auth/limits.ts';
import { pageSize } from '../../analytics/calls.ts';
import { access, builder } from '../builder.ts';
import { connectionOf } from './connection.ts';

const ApiKeyRole = builder.enumType('ApiKeyRole', {
  description: 'What a key may do.',
  values: {
    ADMIN: { description: 'Everything, in every tenant: calls, reads, key management, overrides, cache invalidation, settings.' },
    MEMBER: { description: "Calls (sendMessage, sendTemplatedMessage, embeddings, tokenCount) and reads of its own tenant's history, cache and stats, bodies included." },
    VIEWER: { description: "Reads of its own tenant's history and stats, without request or response bodies or metadata; no calls." },
  } as const,
});

const ApiKeyLimits = builder.objectRef<ApiKeyRecord['limits']>('ApiKeyLimits').implement({
  description: 'What a key may spend; null: no limit. Limits hold across every instance on the same database.',
  fields: (t) => ({
    requestsPerMinute: t.exposeInt('requestsPerMinute', { nullable: true, description: 'Calls that go upstream, per rolling minute (cache hits are free).' }),
    tokensPerMinute: t.exposeInt('tokensPerMinute', { nullable: true, description: 'Tokens per rolling minute: reserved before a call (prompt estimate plus max tokens), settled with the real usage.' }),
    usdPerDay: t.expose('usdPerDay', { type: 'Decimal', nullable: true, description: 'USD per UTC day, at the [Prices] of config.ini.' }),
    usdPerMonth: t.expose('usdPerMonth', { type: 'Decimal', nullable: true, description: 'USD per UTC month.' }),
  }),
});

const ApiKeyUsage = builder.objectRef<KeyUsage>('ApiKeyUsage').implement({
  description: 'What a key has spent, against each of its limits (rates are kept only while a rate limit is set).',
  fields: (t) => ({
    requestsThisMinute: t.exposeFloat('requestsThisMinute', { description: 'Requests counted in the rolling minute.' }),
    tokensThisMinute: t.exposeFloat('tokensThisMinute', { description: 'Tokens counted in the rolling minute (reservations included).' }),
    usdToday: t.expose('usdToday', { type: 'Decimal', description: 'USD spent in this UTC day (reservations included), exact.' }),
    usdThisMonth: t.expose('usdThisMonth', { type: 'Decimal', description: 'USD spent in this UTC month (reservations included), exact.' }),
  }),
});

export const ApiKeyRef = builder.objectRef<ApiKeyRecord>('ApiKey').implement({
  description: 'An API key of Callboard. The key itself is shown once, when it is created; Callboard keeps only its hash.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The key id.' }),
    name: t.exposeString('name', { description: 'What it is for.' }),
    role: t.field({ type: ApiKeyRole, resolve: (key) => key.role, description: 'What it may do.' }),
    tenant: t.exposeString('tenant', { description: 'The tenant its calls belong to, and the only one it reads unless it is an ADMIN.' }),
    prefix: t.exposeString('prefix', { description: 'The first characters of the key, to recognise it by.' }),
    limits: t.field({ type: ApiKeyLimits, resolve: (key) => key.limits, description: 'Its limits.' }),
    usage: t.field({ type: ApiKeyUsage, resolve: (key, _args, { loaders }) => loaders.keyUsage.load(key.id), description: 'What it has spent against its limits now.' }),
    createdAt: t.field({ type: 'DateTime', resolve: (key) => key.createdAt, description: 'When it was created.' }),
    createdBy: t.exposeString('createdBy', { description: 'Who created it.' }),
    lastUsedAt: t.field({ type: 'DateTime', nullable: true, resolve: (key) => key.lastUsedAt, description: 'When it was last used (to the minute).' }),
    revokedAt: t.field({ type: 'DateTime', nullable: true, resolve: (key) => key.revokedAt, description: 'When it was revoked; null while it works.' }),
    expiresAt: t.field({ type: 'DateTime', nullable: true, resolve: (key) => key.expiresAt, description: 'When it stops working; null: never.' }),
  }),
});

const ApiKeyConnection = connectionOf('ApiKey', ApiKeyRef, 'A page of API keys, newest first.');

const ApiKeyLimitsInput = builder.inputType('ApiKeyLimitsInput', {
  description: 'Limits of a key; a null or absent field means no limit (on update: absent leaves it, null removes it).',
  fields: (t) => ({
    requestsPerMinute: t.int({ description: 'Calls that go upstream per rolling minute.' }),
    tokensPerMinute: t.int({ description: 'Tokens per rolling minute.' }),
    usdPerDay: t.field({ type: 'Decimal', description: 'USD per UTC day, a decimal string such as "5" or "0.25".' }),
    usdPerMonth: t.field({ type: 'Decimal', description: 'USD per UTC month, a decimal string.' }),
  }),
});

const CreateApiKeyInput = builder.inputType('CreateApiKeyInput', {
  description: 'A new API key.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'What it is for, 1 to 200 characters.' }),
    role: t.field({ type: ApiKeyRole, required: true, description: 'What it may do.' }),
    tenant: t.string({ required: true, description: 'Its tenant: letters, digits, ".", "_" or "-".' }),
    limits: t.field({ type: ApiKeyLimitsInput, description: 'Its limits; none by default.' }),
    expiresAt: t.field({ type: 'DateTime', description: 'When it stops working; never by default.' }),
  }),
});

const UpdateApiKeyInput = builder.inputType('UpdateApiKeyInput', {
  description: 'Changes to a key; absent fields stay as they are. Role and tenant never change: create a new key instead.',
  fields: (t) => ({
    name: t.string({ description: 'A new name.' }),
    limits: t.field({ type: ApiKeyLimitsInput, description: 'New limits; fields left out stay, null removes a limit.' }),
    expiresAt: t.field({ type: 'DateTime', description: 'A new expiry; null: never.' }),
  }),
});

const CreateApiKeyPayload = builder.objectRef<{ key: string; apiKey: ApiKeyRecord }>('CreateApiKeyPayload').implement({
  description: 'A created key.',
  fields: (t) => ({
    key: t.exposeString('key', { description: 'The secret, shown this once: Callboard keeps only its hash.' }),
    apiKey: t.field({ type: ApiKeyRef, resolve: (payload) => payload.apiKey, description: 'The key as stored.' }),
  }),
});

builder.queryFields((t) => ({
  me: t.field({
    ...access.viewer,
    type: ApiKeyRef,
    nullable: true,
    description: 'The API key of this request; null for the master key and open mode.',
    resolve: (_root, _args, { identity }) => identity.apiKey,
  }),
  apiKeys: t.field({
    type: ApiKeyConnection,
    description: 'API keys, newest first (ADMIN).',
    args: {
      first: t.arg.int({ description: 'Page size, 0 to 100. Default 20.' }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
      tenant: t.arg.string({ description: 'Only keys of this tenant.' }),
      includeRevoked: t.arg.boolean({ defaultValue: true, description: 'Include revoked keys.' }),
    },
    resolve: async (_root, args, { services }) => {
      const first = pageSize(args.first);
      const page = await services.keys.list({ tenant: args.tenant ?? null, first, after: args.after, includeRevoked: args.includeRevoked ?? true });
      return {
        page: {
          nodes: page.keys.map((key) => ({ node: key, cursor: key.id })),
          hasNextPage: page.hasNextPage,
          totalCount: () => services.keys.count({ tenant: args.tenant ?? null, includeRevoked: args.includeRevoked ?? true }),
        },
        after: args.after,
      };
    },
  }),
}));

builder.mutationFields((t) => ({
  createApiKey: t.field({
    type: CreateApiKeyPayload,
    description: 'Creates an API key and shows its secret this once (ADMIN).',
    args: { input: t.arg({ type: CreateApiKeyInput, required: true, description: 'The key.' }) },
    resolve: async (_root, { input }, { services, actor }) => {
      const { key, record } = await services.keys.create(input, actor);
      return { key, apiKey: record };
    },
  }),
  updateApiKey: t.field({
    type: ApiKeyRef,
    description: "Changes a key's name, limits or expiry (ADMIN).",
    args: { id: t.arg.id({ required: true, description: 'The key id.' }), input: t.arg({ type: UpdateApiKeyInput, required: true, description: 'The changes.' }) },
    resolve: async (_root, { id, input }, { services, actor }) => {
      const record = await services.keys.update(String(id), { ...input, expiresAt: input.expiresAt }, actor, null);
      await services.announceKeyChange(record.id);
      return record;
    },
  }),
  revokeApiKey: t.field({
    type: ApiKeyRef,
    description: 'Revokes a key: it stops working on every instance within a second (ADMIN).',
    args: { id: t.arg.id({ required: true, description: 'The key id.' }) },
    resolve: async (_root, { id }, { services, actor }) => {
      const record = await services.keys.revoke(String(id), actor, null);
      await services.announceKeyChange(record.id);
      return record;
    },
  }),
}));
