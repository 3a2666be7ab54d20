import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Mustache from 'mustache';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallboardError } from '../errors.ts';
import { createTemplateStore, renderCall, renderTemplate, type TemplateStore } from './templates.ts';

const tricky = `Tom & "Jerry" <b>it's</b> a/b = \`x\``;

describe('renderTemplate', () => {
  it('escapes only & " < > in {{var}}, as chevron does', () => {
    // chevron: & first, then " < >; leaves ' / = and backtick alone.
    expect(renderTemplate('Hi {{name}}!', { name: tricky })).toBe('Hi Tom &amp; &quot;Jerry&quot; &lt;b&gt;it\'s&lt;/b&gt; a/b = `x`!');
  });

  it('escapes & before the others, so an existing entity is escaped once more', () => {
    expect(renderTemplate('{{v}}', { v: '&lt; &amp; "' })).toBe('&amp;lt; &amp;amp; &quot;');
  });

  it('leaves {{{var}}} and {{& var}} raw', () => {
    expect(renderTemplate('{{{name}}}|{{& name}}|{{&name}}', { name: tricky })).toBe(`${tricky}|${tricky}|${tricky}`);
  });

  it('renders numbers and dotted names, and missing or null variables as empty', () => {
    expect(renderTemplate('{{n}} {{zero}} {{agent.name}} [{{missing}}] [{{nothing}}] [{{agent.missing}}]', { n: 42, zero: 0, agent: { name: 'Lisa & Oscar' }, nothing: null })).toBe(
      '42 0 Lisa &amp; Oscar [] [] []',
    );
  });

  it('renders sections, inverted sections and lists', () => {
    const template = 'Actions:\n{{#actions}}\n- {{type}}: {{content}}\n{{/actions}}\n{{^actions}}\nnone\n{{/actions}}\n{{#verbose}}verbose{{/verbose}}{{^verbose}}terse{{/verbose}}';
    expect(renderTemplate(template, { actions: [{ type: 'TALK', content: '<hi>' }, { type: 'DONE', content: '' }], verbose: false })).toBe(
      'Actions:\n- TALK: &lt;hi&gt;\n- DONE: \nterse',
    );
    expect(renderTemplate(template, { actions: [], verbose: true })).toBe('Actions:\nnone\nverbose');
  });

  it('does not touch the global Mustache.escape', () => {
    const before = Mustache.escape;
    renderTemplate('{{v}}', { v: "'" });
    expect(Mustache.escape).toBe(before);
    expect(Mustache.render('{{v}}', { v: "'" })).toBe('&#39;');
  });

  it('reports a malformed template as TEMPLATE_ERROR', () => {
    expect(() => renderTemplate('Hello {{#open}} never closed', {})).toThrow(expect.objectContaining({ code: 'TEMPLATE_ERROR' }));
  });
});

describe('createTemplateStore', () => {
  let promptsDir: string;

  beforeAll(async () => {
    promptsDir = await mkdtemp(path.join(tmpdir(), 'callboard-templates-'));
    await mkdir(path.join(promptsDir, 'sub'));
    await writeFile(path.join(promptsDir, 'generative_agent.system.mustache'), 'You are {{name}}.');
    await writeFile(path.join(promptsDir, 'sub', 'x.mustache'), 'nested');
    await writeFile(path.join(promptsDir, 'windows.mustache'), 'line one\r\nline two\r\n');
    await writeFile(path.join(path.dirname(promptsDir), `${path.basename(promptsDir)}-secret.txt`), 'secret');
  });

  afterAll(async () => {
    await rm(promptsDir, { recursive: true, force: true });
    await rm(path.join(path.dirname(promptsDir), `${path.basename(promptsDir)}-secret.txt`), { force: true });
  });

  it('reads templates by name, nested ones too', async () => {
    const store = createTemplateStore({ promptsDir });
    await expect(store.load('generative_agent.system.mustache')).resolves.toEqual({ name: 'generative_agent.system.mustache', text: 'You are {{name}}.' });
    await expect(store.load('sub/x.mustache')).resolves.toEqual({ name: 'sub/x.mustache', text: 'nested' });
  });

  it('reads CRLF files as LF, as Python text mode does', async () => {
    const store = createTemplateStore({ promptsDir });
    expect((await store.load('windows.mustache')).text).toBe('line one\nline two\n');
  });

  it('keeps a text in memory after the first read', async () => {
    const file = path.join(promptsDir, 'cached.mustache');
    await writeFile(file, 'first');
    const store = createTemplateStore({ promptsDir });
    const [a, b] = await Promise.all([store.load('cached.mustache'), store.load('cached.mustache')]);
    await writeFile(file, 'second');
    expect([a.text, b.text, (await store.load('cached.mustache')).text]).toEqual(['first', 'first', 'first']);
    expect((await createTemplateStore({ promptsDir }).load('cached.mustache')).text).toBe('second');
  });

  it('reports a missing template as NOT_FOUND naming it, and finds it once it exists', async () => {
    const store = createTemplateStore({ promptsDir });
    const error = await store.load('later.mustache').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CallboardError);
    expect(error).toMatchObject({ code: 'NOT_FOUND', details: { template: 'later.mustache' } });
    expect((error as Error).message).toContain('later.mustache');
    expect((error as Error).message).not.toContain(promptsDir);

    await writeFile(path.join(promptsDir, 'later.mustache'), 'here now');
    await expect(store.load('later.mustache')).resolves.toMatchObject({ text: 'here now' });
  });

  it('reports a folder as NOT_FOUND', async () => {
    await expect(createTemplateStore({ promptsDir }).load('sub')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('refuses to reach a real file beside the prompts folder', async () => {
    const name = `../${path.basename(promptsDir)}-secret.txt`;
    await expect(readFile(path.join(promptsDir, name), 'utf8')).resolves.toBe('secret');
    await expect(createTemplateStore({ promptsDir }).load(name)).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
  });

  it.each([
    ['', 'empty'],
    ['../secret.txt', 'parent'],
    ['sub/../../secret.txt', 'parent in the middle'],
    ['..', 'bare parent'],
    ['./generative_agent.system.mustache', 'dot segment'],
    ['/etc/passwd', 'absolute'],
    ['sub\\x.mustache', 'backslash'],
    ['..\\secret.txt', 'backslash parent'],
    ['C:/secret.txt', 'drive letter'],
    ['sub//x.mustache', 'empty segment'],
    ['sub/', 'trailing slash'],
    ['x\0.mustache', 'NUL'],
  ])('rejects %j (%s) with BAD_USER_INPUT', async (name) => {
    const store = createTemplateStore({ promptsDir });
    await expect(store.load(name)).rejects.toMatchObject({ code: 'BAD_USER_INPUT', details: { template: name } });
  });
});

/** A store over a fixed set of texts, for renderCall tests that do not need the disk. */
function memoryStore(texts: Record<string, string>): TemplateStore & { loads: string[] } {
  const loads: string[] = [];
  return {
    loads,
    async load(name) {
      loads.push(name);
      const text = texts[name];
      if (text === undefined) throw new CallboardError('NOT_FOUND', `Template "${name}" not found.`, { details: { template: name } });
      return { name, text };
    },
  };
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('renderCall', () => {
  const texts = {
    'system.mustache': 'You are {{name}}, {{{bio}}}.',
    'user.mustache': 'Say {{greeting}}',
  };

  it('renders a system and a user template with the variables, system first', async () => {
    const store = memoryStore(texts);
    const rendered = await renderCall(store, {
      systemTemplateName: 'system.mustache',
      userTemplateName: 'user.mustache',
      variables: { name: 'Ana "A" <Smith>', bio: 'a <b>bold</b> one', greeting: "it's & / `hi`" },
    });
    expect(rendered).toEqual({
      messages: [
        { role: 'system', content: 'You are Ana &quot;A&quot; &lt;Smith&gt;, a <b>bold</b> one.' },
        { role: 'user', content: "Say it's &amp; / `hi`" },
      ],
      templateName: 'system.mustache+user.mustache',
      templateHash: sha256(`${texts['system.mustache']}\u0000${texts['user.mustache']}`),
    });
  });

  it('sends a system template alone', async () => {
    const rendered = await renderCall(memoryStore(texts), { systemTemplateName: 'system.mustache', variables: { name: 'Ana' } });
    expect(rendered.messages).toEqual([{ role: 'system', content: 'You are Ana, .' }]);
    expect(rendered.templateName).toBe('system.mustache');
    expect(rendered.templateHash).toBe(sha256(texts['system.mustache']));
  });

  it('sends plain prompts as given, unrendered, with no template name or hash', async () => {
    const store = memoryStore(texts);
    const rendered = await renderCall(store, { systemPrompt: 'Be {{terse}} & <brief>', userPrompt: '', variables: { terse: 'X' } });
    expect(rendered).toEqual({
      messages: [
        { role: 'system', content: 'Be {{terse}} & <brief>' },
        { role: 'user', content: '' },
      ],
      templateName: null,
      templateHash: null,
    });
    expect(store.loads).toEqual([]);
  });

  it('mixes a system prompt with a user template', async () => {
    const rendered = await renderCall(memoryStore(texts), { systemPrompt: 'sys', userTemplateName: 'user.mustache', variables: { greeting: 'hi' } });
    expect(rendered.messages).toEqual([
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'Say hi' },
    ]);
    expect(rendered.templateName).toBe('user.mustache');
    expect(rendered.templateHash).toBe(sha256(texts['user.mustache']));
  });

  it('renders with no variables given', async () => {
    const rendered = await renderCall(memoryStore(texts), { systemTemplateName: 'user.mustache' });
    expect(rendered.messages).toEqual([{ role: 'system', content: 'Say ' }]);
  });

  it.each([
    [{}, 'system', 'neither'],
    [{ systemTemplateName: null, systemPrompt: null }, 'system', 'neither'],
    [{ userPrompt: 'u' }, 'system', 'neither'],
    [{ systemTemplateName: 'system.mustache', systemPrompt: 'p' }, 'system', 'both'],
    [{ systemPrompt: '', systemTemplateName: 'system.mustache' }, 'system', 'both'],
    [{ systemPrompt: 'p', userTemplateName: 'user.mustache', userPrompt: 'u' }, 'user', 'both'],
  ])('rejects %j: %s role has %s', async (input, role, what) => {
    const store = memoryStore(texts);
    const error = await renderCall(store, input).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CallboardError);
    expect(error).toMatchObject({ code: 'BAD_USER_INPUT', details: { role } });
    expect((error as Error).message).toContain('Either the template or the prompt must be specified, but not both.');
    expect((error as Error).message).toContain(`${role} role has ${what}`);
    expect(store.loads).toEqual([]);
  });

  it('passes NOT_FOUND through for a missing template', async () => {
    await expect(renderCall(memoryStore(texts), { systemTemplateName: 'nope.mustache' })).rejects.toMatchObject({ code: 'NOT_FOUND', details: { template: 'nope.mustache' } });
  });

  it('names the template in a TEMPLATE_ERROR', async () => {
    const store = memoryStore({ 'broken.mustache': '{{#a}} unclosed' });
    await expect(renderCall(store, { systemTemplateName: 'broken.mustache' })).rejects.toMatchObject({ code: 'TEMPLATE_ERROR', details: { template: 'broken.mustache' } });
  });

  it('keeps the hash stable across calls and variables, and changes it with the text', async () => {
    const first = await renderCall(memoryStore(texts), { systemTemplateName: 'system.mustache', variables: { name: 'A' } });
    const again = await renderCall(memoryStore(texts), { systemTemplateName: 'system.mustache', variables: { name: 'B' } });
    const edited = await renderCall(memoryStore({ ...texts, 'system.mustache': `${texts['system.mustache']} ` }), { systemTemplateName: 'system.mustache' });
    expect(first.templateHash).toMatch(/^[0-9a-f]{64}$/);
    expect(again.templateHash).toBe(first.templateHash);
    expect(edited.templateHash).not.toBe(first.templateHash);
    expect(edited.templateName).toBe(first.templateName);
  });

  it('keeps the system/user boundary in the hash', async () => {
    const store = memoryStore({ 'a.mustache': 'ab', 'b.mustache': 'c', 'c.mustache': 'a', 'd.mustache': 'bc' });
    const one = await renderCall(store, { systemTemplateName: 'a.mustache', userTemplateName: 'b.mustache' });
    const two = await renderCall(store, { systemTemplateName: 'c.mustache', userTemplateName: 'd.mustache' });
    expect(one.templateHash).not.toBe(two.templateHash);
  });

  it('works end to end with the file store', async () => {
    const promptsDir = await mkdtemp(path.join(tmpdir(), 'callboard-render-call-'));
    try {
      await writeFile(path.join(promptsDir, 'agent.system.mustache'), 'Agent {{name}}');
      const rendered = await renderCall(createTemplateStore({ promptsDir }), { systemTemplateName: 'agent.system.mustache', userPrompt: 'go', variables: { name: '<Lisa>' } });
      expect(rendered.messages).toEqual([
        { role: 'system', content: 'Agent &lt;Lisa&gt;' },
        { role: 'user', content: 'go' },
      ]);
      expect(rendered.templateHash).toBe(sha256('Agent {{name}}'));
    } finally {
      await rm(promptsDir, { recursive: true, force: true });
    }
  });
});
