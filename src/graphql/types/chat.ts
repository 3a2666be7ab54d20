import { badUserInput } from '../../errors.ts';
import type { ChatMessage as ChatMessageValue, SendMessageResult } from '../../llm/client.ts';
import type { ChatCompletionChunk } from '../../llm/providers/provider.ts';
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

const ContentPartType = builder.enumType('ContentPartType', {
  description: 'What a part of a message holds.',
  values: { TEXT: { value: 'text', description: 'Text.' }, IMAGE_URL: { value: 'image_url', description: 'An image, by URL or data: URL (user messages).' } } as const,
});

const ContentPartInput = builder.inputType('ContentPartInput', {
  description: 'One part of a message: text, or an image. Text parts count toward tokenCount and the character limit; images are bounded by the request size.',
  fields: (t) => ({
    type: t.field({ type: ContentPartType, required: true, description: 'TEXT or IMAGE_URL.' }),
    text: t.string({ description: 'The text of a TEXT part.' }),
    imageUrl: t.string({ description: 'The URL (or data: URL) of an IMAGE_URL part.' }),
    detail: t.string({ description: 'low, high or auto: how closely the model looks at the image.' }),
  }),
});

const ToolCallInput = builder.inputType('ToolCallInput', {
  description: 'A call of a tool that the model made, sent back in the assistant message of a tool round trip.',
  fields: (t) => ({
    id: t.string({ required: true, description: 'The id the model gave the call; the tool message that answers it names it in toolCallId.' }),
    name: t.string({ required: true, description: 'The function called.' }),
    arguments: t.string({ required: true, description: 'Its arguments, as the JSON text the model wrote.' }),
  }),
});

export const ChatMessageInput = builder.inputType('ChatMessageInput', {
  description: 'One message of a conversation sent to a model: content (text) or parts (text and images), or, for an assistant message, tool calls.',
  fields: (t) => ({
    role: t.field({ type: ChatRole, required: true, description: 'Who wrote the message.' }),
    content: t.string({ description: 'The text of the message. Give content or parts; an assistant message with toolCalls may have neither.' }),
    parts: t.field({ type: [ContentPartInput], description: 'The message as parts (text and images), instead of content.' }),
    name: t.string({ description: 'An optional name that tells participants of the same role apart.' }),
    toolCalls: t.field({ type: [ToolCallInput], description: 'An assistant message: the tools the model called.' }),
    toolCallId: t.string({ description: 'A TOOL message: the id of the call it answers.' }),
  }),
});

interface ToolCallValue {
  id: string;
  function: { name: string; arguments: string };
}

const ToolCall = builder.objectRef<ToolCallValue>('ToolCall').implement({
  description: 'A call of one of the request\'s tools, which the caller runs and answers with a TOOL message.',
  fields: (t) => ({
    id: t.exposeString('id', { description: 'The id to answer in the TOOL message (toolCallId).' }),
    name: t.string({ resolve: (call) => call.function.name, description: 'The function to call.' }),
    arguments: t.string({ resolve: (call) => call.function.arguments, description: 'Its arguments, as JSON text written by the model (check them before use).' }),
  }),
});

type AnswerMessage = SendMessageResult['message'] & { reasoning_content?: string | null; reasoning?: string | null };

const ChatMessage = builder.objectRef<AnswerMessage>('ChatMessage').implement({
  description: "A message of the model's answer.",
  fields: (t) => ({
    role: t.field({ type: ChatRole, resolve: (message) => message.role, description: 'Always ASSISTANT.' }),
    content: t.exposeString('content', { nullable: true, description: 'The text of the answer (JSON text in JSON mode); null when the model refused or only called tools.' }),
    refusal: t.exposeString('refusal', { nullable: true, description: "The model's refusal message, when it refused." }),
    toolCalls: t.field({
      type: [ToolCall],
      resolve: (message) => (message.tool_calls ?? []).filter((call): call is ToolCallValue & { type: 'function' } => call.type === 'function'),
      description: 'The tools the model called (finishReason tool_calls); empty when none.',
    }),
    reasoning: t.string({
      nullable: true,
      resolve: (message) => message.reasoning_content ?? message.reasoning ?? null,
      description: 'The reasoning the provider returned beside the answer (reasoning_content of DeepSeek, vLLM and others), when it returned any.',
    }),
  }),
});

const ChatChoice = builder.objectRef<SendMessageResult['choices'][number]>('ChatChoice').implement({
  description: 'One of the answers asked for with n.',
  fields: (t) => ({
    index: t.exposeInt('index', { description: 'Its position, from 0.' }),
    message: t.field({ type: ChatMessage, resolve: (choice) => choice.message, description: 'The answer.' }),
    finishReason: t.string({ nullable: true, resolve: (choice) => choice.finish_reason ?? null, description: 'Why the model stopped: stop, length, tool_calls, content_filter.' }),
    logprobs: t.field({ type: 'JSON', nullable: true, resolve: (choice) => choice.logprobs ?? null, description: "The tokens' log probabilities, when logprobs was asked (OpenAI's format)." }),
  }),
});

export const SendMessagePayload = builder.objectRef<SendMessageResult>('SendMessagePayload').implement({
  description: 'The answer to a chat call, with how it was obtained.',
  fields: (t) => ({
    message: t.field({ type: ChatMessage, resolve: (result) => result.message, description: "The model's answer: the first choice's message." }),
    choices: t.field({ type: [ChatChoice], resolve: (result) => result.choices, description: 'Every choice (several when n > 1).' }),
    finishReason: t.exposeString('finishReason', { nullable: true, description: 'Why the model stopped (first choice): stop, length, tool_calls, content_filter, ...' }),
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
  tools: t.field({ type: ['JSON'], description: 'Tools the model may call, in OpenAI\'s format: {"type": "function", "function": {"name", "description", "parameters"}}. At most 128.' }),
  toolChoice: t.field({ type: 'JSON', description: '"none", "auto", "required", or {"type": "function", "function": {"name": ...}}.' }),
  parallelToolCalls: t.boolean({ description: 'Whether the model may call several tools at once.' }),
  n: t.int({ description: 'How many choices to generate, 1 to 128 (each is billed). Default: 1.' }),
  seed: t.int({ description: 'Asks the provider for repeatable sampling.' }),
  logprobs: t.boolean({ description: "Returns the tokens' log probabilities in choices.logprobs." }),
  topLogprobs: t.int({ description: 'With logprobs: the most likely alternatives per token, 0 to 20.' }),
  user: t.string({ description: "The end user's id, for the provider's abuse monitoring; at most 256 characters." }),
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
    resolve: (_root, { input }, context) => context.services.llm.sendMessage({ ...input, messages: input.messages.map(toMessage), caller: context.caller, signal: context.signal, requestLog: context.requestLog }),
  }),
  sendTemplatedMessage: t.field({
    ...access.member,
    type: SendMessagePayload,
    description: 'Renders the templates or prompts, then sends the chat call as sendMessage does; the history records the template name and hash.',
    extensions: paidField,
    args: { input: t.arg({ type: SendTemplatedMessageInput, required: true, description: 'The call.' }) },
    resolve: (_root, { input }, context) =>
      context.services.llm.templatedCall({ ...input, variables: input.variables as Record<string, unknown> | null, caller: context.caller, signal: context.signal, requestLog: context.requestLog }),
  }),
}));

interface MessageArgument {
  role: ChatRoleValue;
  content?: string | null;
  parts?: { type: 'text' | 'image_url'; text?: string | null; imageUrl?: string | null; detail?: string | null }[] | null;
  name?: string | null;
  toolCalls?: { id: string; name: string; arguments: string }[] | null;
  toolCallId?: string | null;
}

/** A GraphQL message as OpenAI's wire format has it (chat-request.ts checks the rest). */
export function toMessage(message: MessageArgument, index: number): ChatMessageValue {
  if (message.content != null && message.parts != null) throw badUserInput(`Message ${index}: give content or parts, not both.`, { field: 'messages', index });
  const parts = message.parts?.map((part, partIndex) => {
    if (part.type === 'text') {
      if (part.text == null) throw badUserInput(`Message ${index}: TEXT part ${partIndex} needs text.`, { field: 'messages', index });
      return { type: 'text' as const, text: part.text };
    }
    if (part.imageUrl == null) throw badUserInput(`Message ${index}: IMAGE_URL part ${partIndex} needs imageUrl.`, { field: 'messages', index });
    return { type: 'image_url' as const, image_url: { url: part.imageUrl, ...(part.detail ? { detail: part.detail } : {}) } };
  });
  return {
    role: message.role,
    content: parts ?? message.content ?? null,
    ...(message.name ? { name: message.name } : {}),
    ...(message.toolCalls ? { tool_calls: message.toolCalls.map((call) => ({ id: call.id, type: 'function' as const, function: { name: call.name, arguments: call.arguments } })) } : {}),
    ...(message.toolCallId != null ? { tool_call_id: message.toolCallId } : {}),
  };
}

type ChatRoleValue = 'system' | 'user' | 'assistant' | 'developer' | 'tool';
type SchemaTypesOf<T> = T extends PothosSchemaTypes.SchemaBuilder<infer Types> ? Types : never;

interface ToolCallDeltaValue {
  index: number;
  id?: string;
  function?: { name?: string; arguments?: string };
}

interface ChatDeltaValue {
  choice: number;
  content: string | null;
  reasoning: string | null;
  refusal: string | null;
  toolCalls: ToolCallDeltaValue[];
  finishReason: string | null;
}

/** One event of sendMessageStream: a delta, then the whole result last (or an error, which ends the stream). */
interface StreamEvent {
  delta?: ChatDeltaValue;
  result?: SendMessageResult;
  error?: unknown;
}

const ToolCallDelta = builder.objectRef<ToolCallDeltaValue>('ToolCallDelta').implement({
  description: "A piece of a tool call: its id and name come first, then its arguments' text in pieces.",
  fields: (t) => ({
    index: t.exposeInt('index', { description: 'Which call of the message the piece belongs to.' }),
    id: t.string({ nullable: true, resolve: (delta) => delta.id ?? null, description: 'The call id (first piece only).' }),
    name: t.string({ nullable: true, resolve: (delta) => delta.function?.name ?? null, description: 'The function (first piece only).' }),
    arguments: t.string({ nullable: true, resolve: (delta) => delta.function?.arguments ?? null, description: 'More of the arguments text.' }),
  }),
});

const ChatDelta = builder.objectRef<ChatDeltaValue>('ChatDelta').implement({
  description: 'What one chunk of a streamed answer adds to one choice.',
  fields: (t) => ({
    choice: t.exposeInt('choice', { description: 'The choice it belongs to (0 unless n > 1).' }),
    content: t.exposeString('content', { nullable: true, description: 'More of the answer text.' }),
    reasoning: t.exposeString('reasoning', { nullable: true, description: 'More of the reasoning, for providers that stream it.' }),
    refusal: t.exposeString('refusal', { nullable: true, description: 'More of a refusal.' }),
    toolCalls: t.field({ type: [ToolCallDelta], resolve: (delta) => delta.toolCalls, description: 'Pieces of tool calls.' }),
    finishReason: t.exposeString('finishReason', { nullable: true, description: "Set on the choice's last delta." }),
  }),
});

const SendMessageStreamEvent = builder.objectRef<StreamEvent>('SendMessageStreamEvent').implement({
  description: 'An event of sendMessageStream: deltas as the provider sends them (or as the cache replays them), then the result.',
  fields: (t) => ({
    delta: t.field({ type: ChatDelta, nullable: true, resolve: (event) => event.delta ?? null, description: 'A piece of the answer; null on the last event.' }),
    result: t.field({
      type: SendMessagePayload,
      nullable: true,
      resolve: (event) => {
        // A failure after the first delta: the event carries the coded error, and the stream ends.
        if (event.error !== undefined) throw event.error;
        return event.result ?? null;
      },
      description: 'On the last event: the whole answer, its usage, cacheStatus and history row.',
    }),
  }),
});

/** The deltas of one chunk, one per choice it touches. */
function deltasOf(chunk: ChatCompletionChunk): ChatDeltaValue[] {
  return chunk.choices.map((part) => {
    const delta = part.delta as typeof part.delta & { reasoning_content?: string | null; reasoning?: string | null };
    return {
      choice: part.index,
      content: delta.content ?? null,
      reasoning: delta.reasoning_content ?? delta.reasoning ?? null,
      refusal: delta.refusal ?? null,
      toolCalls: (delta.tool_calls ?? []).map((call) => ({ index: call.index, id: call.id, function: call.function })),
      finishReason: part.finish_reason ?? null,
    };
  });
}

builder.subscriptionField('sendMessageStream', (t) =>
  t.field({
    ...access.member,
    type: SendMessageStreamEvent,
    description:
      'sendMessage as a stream (GraphQL over Server-Sent Events): deltas as the provider sends them, then the result. A failure before the first delta is an error of the subscription; one after it ends the stream with an event whose result is an error (STREAM_INTERRUPTED, ABORTED, ...). Closing the connection stops the upstream request.',
    extensions: paidField,
    args: { input: t.arg({ type: SendMessageInput, required: true, description: 'The call.' }) },
    subscribe: async function* (_root, { input }, context): AsyncGenerator<StreamEvent> {
      const stream = await context.services.llm.streamMessage({ ...input, messages: input.messages.map(toMessage), caller: context.caller, signal: context.signal, requestLog: context.requestLog });
      try {
        for await (const chunk of stream) for (const delta of deltasOf(chunk)) yield { delta };
      } catch (error) {
        yield { error };
        return;
      }
      yield { result: stream.result() };
    },
    resolve: (event) => event,
  }),
);
