import type { Config } from '../config/config.ts';
import { badUserInput, InputLimitError } from '../errors.ts';

/** The bounds of `[Limits]` on what one call carries. */
export type InputLimits = Pick<Config['limits'], 'maxMessages' | 'maxCharactersPerCall' | 'maxMetadataDepth' | 'maxMetadataBytes' | 'maxTags' | 'maxTagLength'>;

interface CountedMessage {
  content: unknown;
  name?: string | null;
  tool_calls?: readonly { function?: { name?: unknown; arguments?: unknown } }[] | null;
}

/** Tags and metadata, which every call may carry into the history. */
export function checkCallOptions(input: { tags?: readonly string[] | null; metadata?: unknown }, limits: InputLimits): void {
  const tags = input.tags ?? [];
  if (tags.length > limits.maxTags) {
    throw new InputLimitError('MAX_TAGS', 'tags', `A call carries at most ${limits.maxTags} tags ([Limits] MAX_TAGS), got ${tags.length}.`, {
      max: limits.maxTags,
      actual: tags.length,
    });
  }
  for (const [index, tag] of tags.entries()) {
    if (typeof tag !== 'string' || tag.trim() === '') throw badUserInput(`Tag ${index} is empty; tags must be non-empty strings.`, { field: 'tags', index });
    if (tag.length > limits.maxTagLength) {
      throw new InputLimitError('MAX_TAG_LENGTH', 'tags', `Tag ${index} has ${tag.length} characters; at most ${limits.maxTagLength} are allowed ([Limits] MAX_TAG_LENGTH).`, {
        max: limits.maxTagLength,
        actual: tag.length,
        index,
      });
    }
  }
  checkMetadata(input.metadata, limits);
}

function checkMetadata(metadata: unknown, limits: InputLimits): void {
  if (metadata === undefined || metadata === null) return;
  // Depth first: serialising (JSON.stringify recurses) a value thousands of levels deep would overflow the stack.
  if (nestingDepth(metadata, limits.maxMetadataDepth) > limits.maxMetadataDepth) {
    throw new InputLimitError('MAX_METADATA_DEPTH', 'metadata', `metadata nests more than ${limits.maxMetadataDepth} levels ([Limits] MAX_METADATA_DEPTH).`, {
      max: limits.maxMetadataDepth,
    });
  }
  const bytes = Buffer.byteLength(JSON.stringify(metadata) ?? 'null');
  if (bytes > limits.maxMetadataBytes) {
    throw new InputLimitError('MAX_METADATA_BYTES', 'metadata', `metadata takes ${bytes} bytes as JSON; at most ${limits.maxMetadataBytes} are allowed ([Limits] MAX_METADATA_BYTES).`, {
      max: limits.maxMetadataBytes,
      actual: bytes,
    });
  }
}

/** Chat messages: their number, and their characters (contents and names) together. */
export function checkMessages(messages: readonly CountedMessage[], limits: InputLimits, field = 'messages'): void {
  if (messages.length > limits.maxMessages) {
    throw new InputLimitError('MAX_MESSAGES', field, `A call carries at most ${limits.maxMessages} messages ([Limits] MAX_MESSAGES), got ${messages.length}.`, {
      max: limits.maxMessages,
      actual: messages.length,
    });
  }
  checkCharacters(charactersOf(messages), limits, field);
}

/** Texts to embed or to count: their characters together. */
export function checkTexts(texts: readonly string[], limits: InputLimits, field = 'texts'): void {
  checkCharacters(charactersOf(texts), limits, field);
}

/**
 * The characters of a prompt: texts, or chat messages' contents (text parts included), names and
 * tool calls, together. Images are bounded by the body size, not counted here.
 */
export function charactersOf(prompt: readonly (string | CountedMessage)[]): number {
  let characters = 0;
  for (const item of prompt) {
    if (typeof item === 'string') {
      characters += item.length;
      continue;
    }
    // Not a message: refused by the caller's own check, with its index.
    if (typeof item !== 'object' || item === null) continue;
    const { content } = item;
    if (typeof content === 'string') characters += content.length;
    else if (Array.isArray(content)) for (const part of content) characters += typeof part?.text === 'string' ? part.text.length : 0;
    characters += typeof item.name === 'string' ? item.name.length : 0;
    for (const call of Array.isArray(item.tool_calls) ? item.tool_calls : []) {
      characters += (typeof call?.function?.name === 'string' ? call.function.name.length : 0) + (typeof call?.function?.arguments === 'string' ? call.function.arguments.length : 0);
    }
  }
  return characters;
}

function checkCharacters(characters: number, limits: InputLimits, field: string): void {
  if (characters <= limits.maxCharactersPerCall) return;
  throw new InputLimitError(
    'MAX_CHARACTERS_PER_CALL',
    field,
    `The ${field} of this call hold ${characters} characters; at most ${limits.maxCharactersPerCall} are allowed ([Limits] MAX_CHARACTERS_PER_CALL).`,
    { max: limits.maxCharactersPerCall, actual: characters },
  );
}

/**
 * The nesting of a JSON-like value (a scalar 0, `{}` and `[]` 1, `{"a": []}` 2), walked with a
 * stack of our own rather than recursion, so that a value 100,000 levels deep cannot overflow the
 * call stack. It stops once past `stopAfter`, which also ends the walk of a cyclic value.
 */
export function nestingDepth(value: unknown, stopAfter: number): number {
  let deepest = 0;
  const values: unknown[] = [value];
  const depths: number[] = [0];
  while (values.length > 0) {
    const current = values.pop();
    const depth = depths.pop()! + 1;
    if (current === null || typeof current !== 'object') continue;
    if (depth > deepest) {
      deepest = depth;
      if (deepest > stopAfter) return deepest;
    }
    for (const child of Array.isArray(current) ? current : Object.values(current)) {
      values.push(child);
      depths.push(depth);
    }
  }
  return deepest;
}
