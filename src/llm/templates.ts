import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import Mustache from 'mustache';
import { CallboardError, badUserInput } from '../errors.ts';

/** Python's chevron escapes only these four; mustache.js would also escape ' / ` = and change prompts and cache keys. */
function escapeLikeChevron(value: unknown): string {
  return String(value).replaceAll('&', '&amp;').replaceAll('"', '&quot;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

/**
 * A writer of our own rather than Mustache's default one: its parse cache (keyed by the whole
 * template text) is bounded here, and nobody else's global Mustache settings leak into ours.
 */
const writer = new Mustache.Writer();
(writer as unknown as { templateCache: Mustache.TemplateCache }).templateCache = new LRUCache<string, string>({ max: 100 });

const renderOptions: Mustache.RenderOptions = { escape: escapeLikeChevron };

/**
 * Renders as TinyTroupe's chevron would, but for non-string values, which follow JavaScript's
 * String() (chevron uses Python's str(): `True`, `['a']`). Partials, which TinyTroupe's prompts
 * never use, render nothing.
 */
export function renderTemplate(template: string, variables: Record<string, unknown>): string {
  return render(template, variables, null);
}

function render(template: string, variables: Record<string, unknown>, templateName: string | null): string {
  try {
    return writer.render(template, variables, undefined, renderOptions);
  } catch (error) {
    const where = templateName === null ? 'the template' : `template "${templateName}"`;
    const reason = error instanceof Error ? error.message : String(error);
    throw new CallboardError('TEMPLATE_ERROR', `Cannot render ${where}: ${reason}`, {
      details: templateName === null ? {} : { template: templateName },
      cause: error,
    });
  }
}

export interface TemplateStore {
  load(name: string): Promise<{ name: string; text: string }>;
}

/** Reads templates from `<promptsDir>/<name>`, like TinyTroupe's `prompts/` folder, keeping each text after the first read. */
export function createTemplateStore(options: { promptsDir: string }): TemplateStore {
  const root = path.resolve(options.promptsDir);
  // Promises, so that concurrent first loads of one template read the file once.
  const texts = new Map<string, Promise<string>>();

  const read = async (name: string, file: string): Promise<string> => {
    try {
      // Python's text mode (TinyTroupe's open().read()) turns CRLF into LF; do the same so a
      // Windows checkout renders, and hashes, like any other.
      return (await readFile(file, 'utf8')).replaceAll('\r\n', '\n');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
        throw new CallboardError('NOT_FOUND', `Template "${name}" not found.`, { details: { template: name }, cause: error });
      }
      throw error;
    }
  };

  return {
    async load(name) {
      const segments = checkTemplateName(name);
      let text = texts.get(name);
      if (text === undefined) {
        text = read(name, path.join(root, ...segments));
        texts.set(name, text);
        // A missing template may be added later: remember texts, not failures.
        text.catch(() => texts.delete(name));
      }
      return { name, text: await text };
    },
  };
}

function checkTemplateName(name: string): string[] {
  const reject = (why: string): never => {
    throw badUserInput(`Invalid template name "${name}": ${why}.`, { template: name });
  };
  if (typeof name !== 'string' || name === '') reject('it is empty');
  if (name.includes('\0')) reject('it contains a NUL character');
  if (name.includes('\\')) reject('use "/" to separate folders, not "\\"');
  if (name.startsWith('/') || path.isAbsolute(name) || /^[A-Za-z]:/.test(name)) reject('it must be relative to the prompts folder');
  const segments = name.split('/');
  if (segments.some((segment) => segment === '')) reject('it has an empty path segment');
  if (segments.some((segment) => segment === '..' || segment === '.')) reject('"." and ".." are not allowed');
  return segments;
}

export interface TemplatedCallInput {
  systemTemplateName?: string | null;
  systemPrompt?: string | null;
  userTemplateName?: string | null;
  userPrompt?: string | null;
  variables?: Record<string, unknown> | null;
}

export interface RenderedCall {
  messages: { role: 'system' | 'user'; content: string }[];
  /** The template names used, joined by '+', system first; null when only plain prompts were given. */
  templateName: string | null;
  /** SHA-256 hex of the raw texts of the templates used, joined by NUL; null when none. */
  templateHash: string | null;
}

const EITHER_TEMPLATE_OR_PROMPT = 'Either the template or the prompt must be specified, but not both.';

/**
 * TinyTroupe's LLMCall / LLMRequest message composition. Plain prompts are sent as given, not
 * rendered, as TinyTroupe does: a prompt may legitimately contain `{{` and the caller already
 * has the text it wants to send.
 */
export async function renderCall(store: TemplateStore, input: TemplatedCallInput): Promise<RenderedCall> {
  const system = roleSource('system', input.systemTemplateName, input.systemPrompt, true);
  const user = roleSource('user', input.userTemplateName, input.userPrompt, false);
  const variables = input.variables ?? {};

  const messages: RenderedCall['messages'] = [];
  const used: { name: string; text: string }[] = [];
  for (const [role, source] of [
    ['system', system],
    ['user', user],
  ] as const) {
    if (source === null) continue;
    if (source.kind === 'prompt') {
      messages.push({ role, content: source.prompt });
      continue;
    }
    const template = await store.load(source.templateName);
    used.push(template);
    messages.push({ role, content: render(template.text, variables, template.name) });
  }

  return {
    messages,
    templateName: used.length === 0 ? null : used.map((template) => template.name).join('+'),
    templateHash: used.length === 0 ? null : createHash('sha256').update(used.map((template) => template.text).join('\u0000')).digest('hex'),
  };
}

type RoleSource = { kind: 'template'; templateName: string } | { kind: 'prompt'; prompt: string } | null;

function roleSource(role: 'system' | 'user', templateName: string | null | undefined, prompt: string | null | undefined, required: boolean): RoleSource {
  // As in TinyTroupe, "specified" means "not None": an empty prompt is still a prompt.
  const hasTemplate = templateName !== undefined && templateName !== null;
  const hasPrompt = prompt !== undefined && prompt !== null;
  if (hasTemplate && hasPrompt) {
    throw badUserInput(`${EITHER_TEMPLATE_OR_PROMPT} The ${role} role has both a template and a prompt.`, { role });
  }
  if (hasTemplate) return { kind: 'template', templateName };
  if (hasPrompt) return { kind: 'prompt', prompt };
  if (required) {
    throw badUserInput(`${EITHER_TEMPLATE_OR_PROMPT} The ${role} role has neither a template nor a prompt.`, { role });
  }
  return null;
}
