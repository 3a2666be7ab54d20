import type { SendMessageResult } from '../../llm/client.ts';
import { access, builder } from '../builder.ts';
import { paidField } from '../paid-fields.ts';
import { CacheMode, CacheStatus, Usage } from './enums.ts';
import { LlmCall } from './refs.ts';

export const ChatRole = builder.enumType('ChatRole', {
  description: 'Who wrote a chat message.',
  values: {
    SYSTEM: { value: 'system', description: 'Instructions that frame the conversation.' },
    USER: { value: 'user', description: 'The person or program asking.' },
    ASSISTANT: { value: 'assistant', description: 'The model.' },
    DEVELOPER: { value: 'developer', description: 'Instructions from the developer (reasoning models).' },
    TOOL: { value: 'tool', description: 'The result of a tool call.' },
  } as const,
});

export const ChatMessageInput = builder.inputType('ChatMessageInput', {
  description: 'One message of a conversation sent to a model.',
  fields: (t) => ({
    role: t.field({ type: ChatRole, required: true, description: 'Who wrote the message.' }),
    content: t.string({ required: true, description: 'The text of the message.' }),
    name: t.string({ description: 'An optional name that tells participants of the same role apart.' }),
  }),
});

const ChatMessage = builder.objectRef<SendMessageResult['message']>('ChatMessage').implement({
  description: "The model's answer: the first choice's message.",
  fields: (t) => ({
    role: t.field({ type: ChatRole, resolve: (message) => message.role, description: 'Always ASSISTANT.' }),
    content: t.exposeString('content', { nullable: true, description: 'The text of the answer (JSON text in JSON mode); null when the model refused.' }),
    refusal: t.exposeString('refusal', { nullable: true, description: "The model's refusal message, when it refused." }),
  }),
});

const SendMessagePayload = builder.objectRef<SendMessageResult>('SendMessagePayload').implement({
  description: 'The answer to a chat call, with how it was obtained.',
  fields: (t) => ({
    message: t.field({ type: ChatMessage, resolve: (result) => result.message, description: "The model's answer." }),
    finishReason: t.exposeString('finishReason', { nullable: true, description: 'Why the model stopped: stop, length, content_filter, ...' }),
    model: t.exposeString('model', { description: 'The model that answered.' }),
    usage: t.field({ type: Usage, nullable: true, resolve: (result) => result.usage, description: "The provider's token counts." }),
    cacheStatus: t.field({ type: CacheStatus, resolve: (result) => result.cacheStatus, description: 'What the cache did.' }),
    cacheReadFailed: t.exposeBoolean('cacheReadFailed', {
      description: "True when the cache's database could not be read: the provider answered instead (cacheStatus MISS), and the answer is stored once the database is back.",
    }),
    attempts: t.exposeInt('attempts', { description: 'Upstream requests made (0 for a cache hit).' }),
    latencyMs: t.exposeFloat('latencyMs', { description: 'Time spent in Callboard, provider included.' }),
    call: t.field({ type: LlmCall, resolve: (result) => result.call, description: 'The history row of this call.' }),
  }),
});

/** The parameters shared by sendMessage and sendTemplatedMessage. */
const sendFields = (t: PothosSchemaTypes.InputFieldBuilder<PothosSchemaTypes.ExtendDefaultTypes<SchemaTypesOf<typeof builder>>, 'InputObject'>) => ({
  model: t.string({ description: 'The model (for Azure: the deployment). Default: MODEL.' }),
  apiType: t.string({ description: 'The provider to use. Default: API_TYPE (or its override).' }),
  temperature: t.float({ description: 'Sampling temperature, 0 to 2. Default: TEMPERATURE. Not sent to reasoning models.' }),
  maxTokens: t.int({ description: 'Longest answer in tokens. Default: MAX_TOKENS (sent as max_completion_tokens to reasoning models).' }),
  topP: t.float({ description: 'Nucleus sampling, 0 to 1. Default: TOP_P; not sent when unset.' }),
  frequencyPenalty: t.float({ description: '-2 to 2. Default: FREQ_PENALTY.' }),
  presencePenalty: t.float({ description: '-2 to 2. Default: PRESENCE_PENALTY.' }),
  stop: t.stringList({ description: 'Up to 4 sequences where the model stops.' }),
  responseFormat: t.field({
    type: 'JSON',
    description: 'OpenAI response_format: {"type": "json_object"} for JSON mode, or {"type": "json_schema", "json_schema": {...}}.',
  }),
  reasoningEffort: t.string({ description: 'minimal, low, medium or high; reasoning models only. Default: REASONING_EFFORT.' }),
  cache: t.field({ type: CacheMode, description: 'How to use the cache. Default: USE when CACHE_API_CALLS (or force_api_cache) is on, else BYPASS.' }),
  tags: t.stringList({ description: 'Labels recorded in the history, for filtering and grouping.' }),
  metadata: t.field({ type: 'JSON', description: 'Any JSON recorded in the history.' }),
  ...limitFields(t),
});

/** A caller may shorten its own call, never lengthen it past the configuration. */
const limitFields = (t: PothosSchemaTypes.InputFieldBuilder<PothosSchemaTypes.ExtendDefaultTypes<SchemaTypesOf<typeof builder>>, 'InputObject'>) => ({
  deadlineSeconds: t.float({ description: 'Seconds for the whole call, every attempt and wait included; at most CALL_DEADLINE, its default. When it passes: DEADLINE_EXCEEDED.' }),
  timeoutSeconds: t.float({ description: 'Seconds per attempt; at most TIMEOUT, its default.' }),
  maxAttempts: t.int({ description: 'Upstream attempts at most; at most MAX_ATTEMPTS, its default.' }),
});

const SendMessageInput = builder.inputType('SendMessageInput', {
  description: 'A chat call. Parameters left out take their defaults from the configuration; absent parameters are not sent.',
  fields: (t) => ({
    messages: t.field({ type: [ChatMessageInput], required: true, description: 'The conversation, oldest first.' }),
    ...sendFields(t),
  }),
});

const SendTemplatedMessageInput = builder.inputType('SendTemplatedMessageInput', {
  description:
    "TinyTroupe's LLMCall: the system message from a template or a prompt (exactly one), the user message likewise (at most one), then a chat call. Templates are mustache files in [Prompts] DIR, rendered with chevron's escaping.",
  fields: (t) => ({
    systemTemplateName: t.string({ description: 'A template file in the prompts folder, e.g. "generative_agent.system.mustache".' }),
    systemPrompt: t.string({ description: 'A plain system prompt, sent as given.' }),
    userTemplateName: t.string({ description: 'A template file for the user message.' }),
    userPrompt: t.string({ description: 'A plain user prompt, sent as given.' }),
    variables: t.field({ type: 'JSON', description: 'Values for the templates ({{name}} is HTML-escaped as chevron does; {{{name}}} is raw).' }),
    ...sendFields(t),
  }),
});

builder.mutationFields((t) => ({
  sendMessage: t.field({
    ...access.member,
    type: SendMessagePayload,
    description: "Sends a chat call through the cache, the provider (with retries) and the history, and returns the first choice's message.",
    extensions: paidField,
    args: { input: t.arg({ type: SendMessageInput, required: true, description: 'The call.' }) },
    resolve: (_root, { input }, context) => context.services.llm.sendMessage({ ...input, messages: input.messages.map(toMessage), caller: context.caller, signal: context.signal }),
  }),
  sendTemplatedMessage: t.field({
    ...access.member,
    type: SendMessagePayload,
    description: 'Renders the templates or prompts, then sends the chat call as sendMessage does; the history records the template name and hash.',
    extensions: paidField,
    args: { input: t.arg({ type: SendTemplatedMessageInput, required: true, description: 'The call.' }) },
    resolve: (_root, { input }, context) =>
      context.services.llm.templatedCall({ ...input, variables: input.variables as Record<string, unknown> | null, caller: context.caller, signal: context.signal }),
  }),
}));

function toMessage(message: { role: ChatRoleValue; content: string; name?: string | null }) {
  return { role: message.role, content: message.content, ...(message.name ? { name: message.name } : {}) };
}

type ChatRoleValue = 'system' | 'user' | 'assistant' | 'developer' | 'tool';
type SchemaTypesOf<T> = T extends PothosSchemaTypes.SchemaBuilder<infer Types> ? Types : never;
