
import type { ChatCompletion, ChatCompletionChunk } from '../providers/provider.ts';

/**
 * What OpenAI-compatible servers add to a message beside OpenAI's fields: the reasoning of
 * DeepSeek, vLLM and LiteLLM (`reasoning_content`; OpenRouter calls it `reasoning`).
 */
type Message = ChatCompletion['choices'][number]['message'] & { reasoning_content?: string | null; reasoning?: string | null };
type Delta = ChatCompletionChunk['choices'][number]['delta'] & { reasoning_content?: string | null; reasoning?: string | null };
type Choice = ChatCompletion['choices'][number];
type ToolCall = NonNullable<Message['tool_calls']>[number] & { type: 'function'; function: { name: string; arguments: string } };

/**
 * Builds the whole answer from a stream's chunks, as they come: each choice's content, refusal,
 * reasoning and tool calls (arguments joined by index), logprobs, finish reason, and the usage of
 * the last chunk. What is assembled so far is a valid ChatCompletion at any moment, so a stream cut
 * halfway still leaves its partial answer for the history.
 */
export class ChunkAssembler {
  private completion: ChatCompletion | null = null;
  private readonly choices = new Map<number, Choice>();
  chunks = 0;

  /** `expectedChoices`: the request's n, so that a stream cut before a choice's first chunk is not whole. */
  constructor(private readonly expectedChoices = 1) {}

  add(chunk: ChatCompletionChunk): void {
    this.chunks += 1;
    if (!this.completion) {
      this.completion = {
        id: chunk.id,
        object: 'chat.completion',
        created: chunk.created,
        model: chunk.model,
        choices: [],
        ...(chunk.system_fingerprint ? { system_fingerprint: chunk.system_fingerprint } : {}),
        ...(chunk.service_tier ? { service_tier: chunk.service_tier } : {}),
      };
    }
    if (chunk.usage) this.completion.usage = chunk.usage;
    for (const part of chunk.choices) {
      let choice = this.choices.get(part.index);
      if (!choice) {
        choice = { index: part.index, message: { role: 'assistant', content: null, refusal: null }, finish_reason: null as unknown as Choice['finish_reason'], logprobs: null };
        this.choices.set(part.index, choice);
      }
      const delta = part.delta as Delta;
      const message = choice.message as Message;
      if (typeof delta.content === 'string') message.content = (message.content ?? '') + delta.content;
      if (typeof delta.refusal === 'string') message.refusal = (message.refusal ?? '') + delta.refusal;
      if (typeof delta.reasoning_content === 'string') message.reasoning_content = (message.reasoning_content ?? '') + delta.reasoning_content;
      if (typeof delta.reasoning === 'string') message.reasoning = (message.reasoning ?? '') + delta.reasoning;
      for (const call of delta.tool_calls ?? []) {
        const calls = (message.tool_calls ??= []) as ToolCall[];
        const existing = calls[call.index];
        if (!existing) calls[call.index] = { id: call.id ?? '', type: 'function', function: { name: call.function?.name ?? '', arguments: call.function?.arguments ?? '' } };
        else {
          if (call.id) existing.id = call.id;
          if (call.function?.name) existing.function.name += call.function.name;
          if (call.function?.arguments) existing.function.arguments += call.function.arguments;
        }
      }
      if (part.logprobs) {
        const logprobs = (choice.logprobs ??= { content: null, refusal: null });
        if (part.logprobs.content) logprobs.content = [...(logprobs.content ?? []), ...part.logprobs.content];
        if (part.logprobs.refusal) logprobs.refusal = [...(logprobs.refusal ?? []), ...part.logprobs.refusal];
      }
      if (part.finish_reason) choice.finish_reason = part.finish_reason;
    }
  }

  /** Every choice has its finish reason: the provider said the answer is whole. */
  get finished(): boolean {
    return this.choices.size >= Math.max(1, this.expectedChoices) && [...this.choices.values()].every((choice) => choice.finish_reason !== null);
  }

  /** The answer so far; null before the first chunk. */
  result(): ChatCompletion | null {
    if (!this.completion) return null;
    return { ...this.completion, choices: [...this.choices.values()].sort((a, b) => a.index - b.index) };
  }
}

/**
 * A whole answer (from the cache, or a non-streamed call) as the chunks a provider would have sent:
 * per choice the role, the reasoning, the content (token by token when logprobs say what the tokens
 * were, else word by word) or refusal, any logprobs not sent with the content, each tool call (its
 * id and name, then its arguments in pieces), then the finish reason; the usage last when asked. Never one aggregated chunk: a client
 * that renders deltas sees a stream like any other.
 */
export function* replayChunks(completion: ChatCompletion, options: { includeUsage: boolean }): Generator<ChatCompletionChunk> {
  const base = {
    id: completion.id,
    object: 'chat.completion.chunk' as const,
    created: completion.created,
    model: completion.model,
    ...(completion.system_fingerprint ? { system_fingerprint: completion.system_fingerprint } : {}),
    ...(completion.service_tier ? { service_tier: completion.service_tier } : {}),
  };
  const chunk = (index: number, delta: Delta, extra: Partial<ChatCompletionChunk['choices'][number]> = {}): ChatCompletionChunk => ({
    ...base,
    choices: [{ index, delta, finish_reason: null, logprobs: null, ...extra }],
    ...(options.includeUsage ? { usage: null } : {}),
  });
  for (const choice of completion.choices) {
    const message = choice.message as Message;
    // Null content (tool calls, a refusal) stays null, as in OpenAI's own stream.
    yield chunk(choice.index, { role: 'assistant', content: typeof message.content === 'string' ? '' : null });
    for (const field of ['reasoning_content', 'reasoning'] as const) {
      for (const piece of words(message[field] ?? '')) yield chunk(choice.index, { [field]: piece });
    }
    const logprobs = choice.logprobs;
    const tokens = logprobs?.content;
    const byToken = !!message.content && !!tokens && tokens.map((token) => token.token).join('') === message.content;
    if (byToken) {
      for (const token of tokens) yield chunk(choice.index, { content: token.token }, { logprobs: { content: [token], refusal: null } });
    } else for (const piece of words(message.content ?? '')) yield chunk(choice.index, { content: piece });
    for (const piece of words(message.refusal ?? '')) yield chunk(choice.index, { refusal: piece });
    // Logprobs that do not follow the content token by token (tokens that split a character, a
    // refusal's) come whole in a chunk of their own: a replay never loses them.
    const rest = byToken ? (logprobs!.refusal ? { content: null, refusal: logprobs!.refusal } : null) : logprobs;
    if (rest) yield chunk(choice.index, {}, { logprobs: rest });
    for (const [index, call] of (message.tool_calls ?? []).entries()) {
      const fn = (call as ToolCall).function;
      yield chunk(choice.index, { tool_calls: [{ index, id: call.id, type: 'function', function: { name: fn.name, arguments: '' } }] });
      for (const piece of slices(fn.arguments, 16)) yield chunk(choice.index, { tool_calls: [{ index, function: { arguments: piece } }] });
    }
    yield chunk(choice.index, {}, { finish_reason: choice.finish_reason });
  }
  if (options.includeUsage) yield { ...base, choices: [], usage: completion.usage ?? null } as ChatCompletionChunk;
}

/** Words with the spaces that follow them: joined again they give the text back exactly. */
function words(text: string): string[] {
  return text.match(/\s*\S+\s*/g) ?? (text ? [text] : []);
}

function slices(text: string, size: number): string[] {
  const pieces: string[] = [];
  for (let start = 0; start < text.length; start += size) pieces.push(text.slice(start, start + size));
  return pieces;
}

