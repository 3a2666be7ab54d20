import { AzureOpenAI } from 'openai';
import type { ProviderDefinition } from './provider.ts';
import { createSdkProvider, explicitClientOptions } from './openai-sdk.ts';

/** Azure OpenAI: AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_KEY; the model names the deployment. */
export const azureProvider: ProviderDefinition = {
  apiType: 'azure',
  description: 'Azure OpenAI; needs AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_KEY. MODEL is the deployment name.',
  missing: (_settings, secrets) => [
    ...(secrets.azureOpenaiEndpoint ? [] : ['AZURE_OPENAI_ENDPOINT']),
    ...(secrets.azureOpenaiKey ? [] : ['AZURE_OPENAI_KEY']),
  ],
  create: (settings, secrets) => {
    const client = (apiVersion: string) =>
      new AzureOpenAI({
        ...explicitClientOptions,
        apiKey: secrets.azureOpenaiKey!,
        apiVersion,
        // baseURL rather than endpoint: the SDK would otherwise read OPENAI_BASE_URL by itself.
        baseURL: `${secrets.azureOpenaiEndpoint!.replace(/\/+$/, '')}/openai`,
        timeout: settings.timeout * 1000,
      });
    const chat = client(settings.azureApiVersion);
    const embeddingVersion = settings.azureEmbeddingModelApiVersion ?? settings.azureApiVersion;
    const endpoint = (apiVersion: string) => `${secrets.azureOpenaiEndpoint!.replace(/\/+$/, '')}/openai?api-version=${apiVersion}`;
    return createSdkProvider(
      'azure',
      { chat: endpoint(settings.azureApiVersion), embeddings: endpoint(embeddingVersion) },
      chat,
      embeddingVersion !== settings.azureApiVersion ? client(embeddingVersion) : chat,
    );
  },
};
