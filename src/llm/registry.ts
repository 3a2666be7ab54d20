import type { Config, OpenAiConfig } from '../config/config.ts';
import { CallboardError } from '../errors.ts';
import { azureProvider } from './providers/azure.ts';
import { openaiCompatibleProvider } from './providers/openai-compatible.ts';
import { openaiProvider } from './providers/openai.ts';
import type { Provider, ProviderDefinition } from './providers/provider.ts';

/** The providers Callboard ships. Adding one is a module under providers/ and a line here. */
export const builtInProviders: readonly ProviderDefinition[] = [openaiProvider, azureProvider, openaiCompatibleProvider];

export interface ProviderStatus {
  apiType: string;
  description: string;
  /** What it still needs (setting or environment variable names); empty when configured. */
  missing: string[];
}

export interface ProviderRegistry {
  /** TinyTroupe's register_client: a new API type, or a replacement for one. */
  register(definition: ProviderDefinition): void;
  apiTypes(): string[];
  has(apiType: string): boolean;
  statuses(settings: OpenAiConfig): ProviderStatus[];
  /** The provider for an API type, its SDK client built once per distinct configuration. */
  providerFor(apiType: string, settings: OpenAiConfig): Provider;
}

export function createProviderRegistry(secrets: Config['secrets'], definitions: readonly ProviderDefinition[] = builtInProviders): ProviderRegistry {
  const byApiType = new Map(definitions.map((definition) => [definition.apiType, definition]));
  // Settings objects are replaced, never mutated, when an override changes: identity is the cache key.
  const built = new Map<string, { settings: OpenAiConfig; provider: Provider }>();
  const definitionFor = (apiType: string) => {
    const definition = byApiType.get(apiType);
    if (!definition) {
      throw new CallboardError('UNKNOWN_PROVIDER', `No provider is registered for API type "${apiType}"; registered: ${[...byApiType.keys()].join(', ')}.`, {
        details: { apiType, registered: [...byApiType.keys()] },
      });
    }
    return definition;
  };
  return {
    register(definition) {
      byApiType.set(definition.apiType, definition);
      built.delete(definition.apiType);
    },
    apiTypes: () => [...byApiType.keys()],
    has: (apiType) => byApiType.has(apiType),
    statuses: (settings) =>
      [...byApiType.values()].map((definition) => ({
        apiType: definition.apiType,
        description: definition.description,
        missing: definition.missing(settings, secrets),
      })),
    providerFor(apiType, settings) {
      const cached = built.get(apiType);
      if (cached?.settings === settings) return cached.provider;
      const definition = definitionFor(apiType);
      const missing = definition.missing(settings, secrets);
      if (missing.length > 0) {
        throw new CallboardError('PROVIDER_NOT_CONFIGURED', `The ${apiType} provider is not configured: set ${missing.join(' and ')}.`, {
          details: { apiType, missing },
        });
      }
      const provider = definition.create(settings, secrets);
      built.set(apiType, { settings, provider });
      return provider;
    },
  };
}
