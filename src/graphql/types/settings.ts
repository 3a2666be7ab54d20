import type { Setting } from '../../config/config.ts';

type SettingView = Omit<Setting, 'source'> & { source: Setting['source'] | 'OVERRIDE' };
import { builder } from '../builder.ts';

const SettingSource = builder.enumType('SettingSource', {
  description: 'Where an effective setting came from.',
  values: {
    DEFAULT: { value: 'DEFAULT', description: "Callboard's built-in default (TinyTroupe's shipped value)." },
    FILE: { value: 'FILE', description: 'A config.ini file.' },
    ENVIRONMENT: { value: 'ENVIRONMENT', description: 'An environment variable.' },
    OVERRIDE: { value: 'OVERRIDE', description: 'A runtime override (forceApiType, forceApiCache, forceDefaultValue), stored in the database.' },
  } as const,
});

const SettingRef = builder.objectRef<SettingView>('Setting').implement({
  description: 'One effective configuration value and its origin.',
  fields: (t) => ({
    section: t.exposeString('section', { description: 'The config.ini section, e.g. OpenAI; Secrets for values read only from the environment.' }),
    key: t.exposeString('key', { description: 'The key within the section, e.g. MODEL.' }),
    value: t.exposeString('value', {
      nullable: true,
      description: 'The value as written. Secrets show only "set", or null when unset; passwords in URLs are masked.',
    }),
    source: t.field({ type: SettingSource, resolve: (setting) => setting.source, description: 'Which layer set the value.' }),
    origin: t.exposeString('origin', { nullable: true, description: 'The file or environment variable that set it, or who set the override; null for defaults.' }),
    secret: t.exposeBoolean('secret', { description: 'True for secrets, whose values are never shown.' }),
  }),
});

builder.queryField('settings', (t) =>
  t.field({
    type: [SettingRef],
    description: 'The effective configuration: every setting, its value and where it came from, runtime overrides included.',
    resolve: (_root, _args, { services }) => {
      const overrides = new Map(services.overrides.list().map((override) => [override.key, override]));
      return services.loaded.settings.map((setting): SettingView => {
        const override = setting.section === 'OpenAI' ? overrides.get(setting.key) : undefined;
        return override ? { ...setting, value: override.value, source: 'OVERRIDE', origin: override.updatedBy } : setting;
      });
    },
  }),
);
