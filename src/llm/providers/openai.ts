import OpenAI from 'openai';
import type { ProviderDefinition } from './provider.ts';
import { createSdkProvider, explicitClientOptions } from './openai-sdk.ts';

/** OpenAI's API (OPENAI_API_KEY), or the server at BASE_URL when it is set. */
export const openaiProvider: ProviderDefinition = {
  apiType: 'openai',
  description: 'OpenAI (api.openai.com, or BASE_URL when set); needs OPENAI_API_KEY.',
  missing: (_settings, secrets) => (secrets.openaiApiKey ? [] : ['OPENAI_API_KEY']),
  create: (settings, secrets) => {
    const baseURL = settings.baseUrl ?? 'https://api.openai.com/v1';
    return createSdkProvider('openai', { chat: baseURL, embeddings: baseURL }, new OpenAI({ ...explicitClientOptions, apiKey: secrets.openaiApiKey!, baseURL, timeout: settings.timeout * 1000 }));
  },
};
