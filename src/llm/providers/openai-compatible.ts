import OpenAI from 'openai';
import type { ProviderDefinition } from './provider.ts';
import { createSdkProvider, explicitClientOptions } from './openai-sdk.ts';

/** Any server that speaks OpenAI's API at BASE_URL (Ollama, vLLM, LM Studio); the key is optional. */
export const openaiCompatibleProvider: ProviderDefinition = {
  apiType: 'openai-compatible',
  description: 'An OpenAI-compatible server at BASE_URL (Ollama, vLLM, LM Studio); OPENAI_API_KEY is optional.',
  missing: (settings) => (settings.baseUrl ? [] : ['BASE_URL']),
  create: (settings, secrets) =>
    createSdkProvider(
      'openai-compatible',
      { chat: settings.baseUrl!, embeddings: settings.baseUrl! },
      new OpenAI({
        ...explicitClientOptions,
        // Local servers ignore the key, but the SDK insists on one.
        apiKey: secrets.openaiApiKey ?? 'not-needed',
        baseURL: settings.baseUrl!,
        timeout: settings.timeout * 1000,
      }),
    ),
};
