import type { Override, OverrideChangeRecord } from '../../llm/overrides.ts';
import type { ProviderStatus } from '../../llm/registry.ts';
import { access, builder } from '../builder.ts';

const Provider = builder.objectRef<ProviderStatus & { active: boolean }>('Provider').implement({
  description: 'A registered provider (API type). Secrets are never shown: only which settings are missing.',
  fields: (t) => ({
    apiType: t.exposeString('apiType', { description: 'Its name, as API_TYPE and apiType take it.' }),
    description: t.exposeString('description', { description: 'What it is and what it needs.' }),
    active: t.exposeBoolean('active', { description: 'True for the provider that serves calls that do not name one (API_TYPE or its override).' }),
    configured: t.boolean({ resolve: (provider) => provider.missing.length === 0, description: 'True when it has what it needs to serve calls.' }),
    missing: t.exposeStringList('missing', { authScopes: { admin: true }, description: 'The settings or environment variables it still needs (ADMIN only).' }),
  }),
});

const RuntimeOverride = builder.objectRef<Override>('RuntimeOverride').implement({
  description: "A runtime override of an [OpenAI] setting (TinyTroupe's force_* levers), stored in the database and seen by every instance.",
  fields: (t) => ({
    key: t.exposeString('key', { description: 'The config.ini key, e.g. API_TYPE.' }),
    value: t.exposeString('value', { description: 'The value, as it would be written in config.ini.' }),
    updatedAt: t.field({ type: 'DateTime', resolve: (override) => override.updatedAt, description: 'When it was set.' }),
    updatedBy: t.exposeString('updatedBy', { description: 'Who set it (the x-callboard-actor header).' }),
  }),
});

const OverrideChange = builder.objectRef<OverrideChangeRecord>('OverrideChange').implement({
  description: 'One audited change to a runtime override.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The change id.' }),
    key: t.exposeString('key', { description: 'The config.ini key.' }),
    oldValue: t.exposeString('oldValue', { nullable: true, description: 'The override before (null: there was none).' }),
    newValue: t.exposeString('newValue', { nullable: true, description: 'The override after (null: it was reset).' }),
    changedBy: t.exposeString('changedBy', { description: 'Who changed it.' }),
    changedAt: t.field({ type: 'DateTime', resolve: (change) => change.changedAt, description: 'When.' }),
  }),
});

builder.queryFields((t) => ({
  providers: t.field({
    ...access.viewer,
    type: [Provider],
    description: 'The registered providers, which one is active and which are configured.',
    resolve: (_root, _args, { services }) => {
      const settings = services.overrides.settings();
      return services.registry.statuses(settings).map((status) => ({ ...status, active: status.apiType === settings.apiType }));
    },
  }),
  overrides: t.field({
    type: [RuntimeOverride],
    description: 'The runtime overrides in force.',
    resolve: (_root, _args, { services }) => services.overrides.list(),
  }),
  overrideChanges: t.field({
    type: [OverrideChange],
    description: 'The audit of runtime override changes, newest first.',
    args: {
      key: t.arg.string({ description: 'Only changes of this key.' }),
      first: t.arg.int({ defaultValue: 50, description: 'How many, at most 500.' }),
    },
    resolve: (_root, args, { services }) => services.overrides.changes({ key: args.key, first: Math.min(Math.max(args.first ?? 50, 0), 500) }),
  }),
}));

builder.mutationField('forceApiType', (t) =>
  t.field({
    type: RuntimeOverride,
    description: "TinyTroupe's force_api_type: the provider that serves calls that do not name one, for every instance, until reset.",
    args: { apiType: t.arg.string({ required: true, description: 'A registered API type.' }) },
    resolve: async (_root, args, context) => {
      await context.services.overrides.set('API_TYPE', args.apiType, context.actor);
      return context.services.overrides.list().find((override) => override.key === 'API_TYPE')!;
    },
  }),
);

builder.mutationField('forceApiCache', (t) =>
  t.field({
    type: [RuntimeOverride],
    description: "TinyTroupe's force_api_cache: whether calls that do not say use the cache (CACHE_API_CALLS), and optionally CACHE_FILE_NAME (kept for compatibility).",
    args: {
      enabled: t.arg.boolean({ required: true, description: 'Use the cache by default.' }),
      fileName: t.arg.string({ description: "TinyTroupe's cache file name; accepted and recorded, not used (the cache is in the database)." }),
    },
    resolve: async (_root, args, context) => {
      const { overrides } = context.services;
      if (args.fileName !== null && args.fileName !== undefined) await overrides.set('CACHE_FILE_NAME', args.fileName, context.actor);
      await overrides.set('CACHE_API_CALLS', args.enabled ? 'True' : 'False', context.actor);
      return overrides.list().filter((override) => override.key === 'CACHE_API_CALLS' || override.key === 'CACHE_FILE_NAME');
    },
  }),
);

builder.mutationField('forceDefaultValue', (t) =>
  t.field({
    type: RuntimeOverride,
    description: "TinyTroupe's force_default_value: overrides any [OpenAI] setting (e.g. MODEL, TEMPERATURE) for every instance. Unknown keys and bad values are BAD_USER_INPUT.",
    args: {
      key: t.arg.string({ required: true, description: 'An [OpenAI] key of config.ini.' }),
      value: t.arg.string({ required: true, description: 'The value, as it would be written in config.ini.' }),
    },
    resolve: async (_root, args, context) => {
      const change = await context.services.overrides.set(args.key, args.value, context.actor);
      return context.services.overrides.list().find((override) => override.key === change.key)!;
    },
  }),
);

builder.mutationField('resetOverrides', (t) =>
  t.field({
    type: [OverrideChange],
    description: 'Removes one runtime override (or all of them without a key), back to config.ini and the environment; returns the changes made.',
    args: { key: t.arg.string({ description: 'The key to reset; omit to reset all.' }) },
    resolve: (_root, args, context) => context.services.overrides.reset(args.key ?? null, context.actor),
  }),
);
