import { usdOrNull } from '../../src/money.ts';
import { describe, expect, it } from 'vitest';
import type { ChatMessage } from '../../src/llm/client.ts';
import { databaseKinds } from '../support/database.ts';
import { chatCompletion } from '../support/fake-openai.ts';
import { azureKey, failure, historyRow, openaiKey, storedRowsText, useLlmHarness, user } from './harness.ts';

const prices = '[Prices]\ngpt-4o-mini = 0.15, 0.60\ntext-embedding-3-small = 0.02, 0\n';

describe.each(databaseKinds)('the audit on %s', (kind) => {
  const harness = useLlmHarness(kind);

  describe('the call history', () => {
    it('records every call with its status, cache status and error code', async () => {
      const { llm } = await harness.start();

      const bypass = await llm.sendMessage({ messages: user('one'), tags: ['history', 'mixed'], metadata: { run: 7 } });
      const miss = await llm.sendMessage({ messages: user('two'), cache: 'USE' });
      const hit = await llm.sendMessage({ messages: user('two'), cache: 'USE' });
      const embedding = await llm.embed({ texts: ['three'] });
      const invalid = await failure(llm.sendMessage({ messages: user('four'), temperature: 3 }));
      harness.fake.script('chat', { error: { status: 401, message: 'who are you?' } });
      const rejected = await failure(llm.sendMessage({ messages: user('five') }));

      await harness.flush();
      const ids = [bypass.call.id, miss.call.id, hit.call.id, embedding.call.id, invalid.details.callId as string, rejected.details.callId as string];
      const rows = await harness.prisma.llmCall.findMany({ where: { id: { in: ids } }, include: { body: true } });
      const byId = new Map(rows.map(({ body, ...row }) => [row.id, { ...row, metadata: body?.metadata }]));
      expect(ids.map((id) => byId.get(id)).map((row) => [row?.kind, row?.status, row?.cacheStatus, row?.errorCode])).toEqual([
        ['CHAT', 'SUCCESS', 'BYPASS', null],
        ['CHAT', 'SUCCESS', 'MISS', null],
        ['CHAT', 'SUCCESS', 'HIT', null],
        ['EMBEDDING', 'SUCCESS', 'BYPASS', null],
        ['CHAT', 'ERROR', 'BYPASS', 'BAD_USER_INPUT'],
        ['CHAT', 'ERROR', 'BYPASS', 'PROVIDER_AUTH_FAILED'],
      ]);
      expect(byId.get(bypass.call.id)).toMatchObject({
        apiType: 'openai',
        model: 'gpt-4o-mini',
        tags: ['history', 'mixed'],
        metadata: { run: 7 },
        promptTokens: 1,
        completionTokens: 2,
        totalTokens: 3,
        estimatedPromptTokens: 8,
      });
      expect(byId.get(rejected.details.callId as string)!.errorMessage).toContain('who are you?');
    });

    it('computes the cost from [Prices], and none for an unpriced model', async () => {
      const { llm } = await harness.start({ ini: prices });
      harness.fake.script('chat', (request) => ({
        json: chatCompletion({ content: 'priced', model: request.body.model, usage: { prompt_tokens: 1000, completion_tokens: 500 } }),
      }));

      const priced = await llm.sendMessage({ messages: user('what does this cost?') });
      const dated = await llm.sendMessage({ messages: user('and this?'), model: 'gpt-4o-mini-2024-07-18' });
      const unpriced = await llm.sendMessage({ messages: user('and this?'), model: 'gpt-unpriced' });
      const embedding = await llm.embed({ texts: ['four words of text'] });

      // 1000 x 0.15 + 500 x 0.60 per million, exactly: a decimal string, no float noise.
      const expected = '0.00045';
      expect(priced.call.costUsd).toBe(expected);
      const rows = await Promise.all([priced, dated, unpriced, embedding].map((result) => historyRow(harness, result.call.id)));
      expect(rows[0]).toMatchObject({ promptTokens: 1000, completionTokens: 500, totalTokens: 1500 });
      expect(rows[0]!.costUsd).toBe(expected);
      expect(rows[1]!.costUsd).toBe(expected);
      expect(rows[2]!.costUsd).toBeNull();
      expect(rows[3]!.promptTokens).toBe(4);
      expect(rows[3]!.costUsd).toBe('0.00000008');
      expect(rows.map((row) => row.costSavedUsd)).toEqual([null, null, null, null]);
    });

    it('keeps the cost of a cached response with its entry and its hits', async () => {
      const { llm } = await harness.start({ ini: prices });
      harness.fake.script('chat', { json: chatCompletion({ content: 'cached', model: 'gpt-4o-mini', usage: { prompt_tokens: 2000, completion_tokens: 0 } }) });

      const miss = await llm.sendMessage({ messages: user('cost me once'), cache: 'USE' });
      const hit = await llm.sendMessage({ messages: user('cost me once'), cache: 'USE' });

      const row = await historyRow(harness, miss.call.id);
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: row.cacheKey! } });
      expect(usdOrNull(entry.costUsd)).toBe('0.0003');
      expect(entry).toMatchObject({ promptTokens: 2000, completionTokens: 0, totalTokens: 2000 });
      // A hit spent nothing, and records apart what it saved: the cost of the stored answer.
      expect(await historyRow(harness, hit.call.id)).toMatchObject({ cacheStatus: 'HIT', costUsd: '0', costSavedUsd: '0.0003' });
      expect(await historyRow(harness, miss.call.id)).toMatchObject({ cacheStatus: 'MISS', costUsd: '0.0003', costSavedUsd: null });
    });

    it('stores no API key, even when a message, the metadata or an error holds one', async () => {
      const { llm } = await harness.start();
      const leaky: ChatMessage[] = [{ role: 'user', content: `my keys are ${openaiKey} and ${azureKey}` }];

      const cached = await llm.sendMessage({ messages: leaky, cache: 'USE', metadata: { note: `key ${openaiKey}`, [azureKey]: true } });
      await llm.sendMessage({ messages: leaky, cache: 'USE' });
      await llm.sendMessage({ messages: leaky, apiType: 'azure', cache: 'USE' });
      await llm.embed({ texts: [`embed ${openaiKey}`], cache: 'USE' });
      harness.fake.script('chat', { error: { status: 401, message: `Incorrect API key provided: ${openaiKey}.` } });
      const error = await failure(llm.sendMessage({ messages: user('with a wrong key') }));
      harness.fake.script('chat', [{ error: { status: 503, message: `overloaded for ${azureKey}` } }, { json: chatCompletion({ content: 'ok', model: 'gpt-4o-mini' }) }]);
      const retried = await llm.sendMessage({ messages: user('after a retry'), apiType: 'azure' });

      // The fake echoes the prompt: an upstream that quotes the server's key is redacted for the caller too.
      expect(cached.message.content).not.toContain(openaiKey);
      expect(cached.message.content).toContain('my keys are [redacted] and [redacted]');
      expect(error.message).not.toContain(openaiKey);
      await harness.flush();
      const stored = await storedRowsText(harness.prisma);
      expect(stored).not.toContain(openaiKey);
      expect(stored).not.toContain(azureKey);
      expect(stored).toContain('[redacted]');
      const attempts = await harness.prisma.llmAttempt.findMany({ where: { callId: retried.call.id }, orderBy: { number: 'asc' } });
      expect(attempts[0]!.errorMessage).toBe('azure answered 503: overloaded for [redacted]');
    });

    it('stores no bodies with STORE_BODIES=False, and the full bodies by default', async () => {
      const quiet = await harness.start({ ini: '[History]\nSTORE_BODIES=False' });
      const withoutBodies = await quiet.llm.sendMessage({ messages: user('forget me'), cache: 'USE' });
      const embedding = await quiet.llm.embed({ texts: ['forget me too'] });
      harness.fake.script('chat', { error: { status: 400, message: 'no' } });
      const error = await failure(quiet.llm.sendMessage({ messages: user('forget my failure') }));
      harness.fake.reset();
      const verbose = await harness.start();
      const withBodies = await verbose.llm.sendMessage({ messages: user('remember me') });

      for (const id of [withoutBodies.call.id, embedding.call.id, error.details.callId as string]) {
        expect(await historyRow(harness, id)).toMatchObject({ requestBody: null, responseBody: null });
      }
      const row = await historyRow(harness, withBodies.call.id);
      expect(row.requestBody).toEqual({ model: 'gpt-4o-mini', messages: user('remember me'), temperature: 1.5, max_tokens: 4000, frequency_penalty: 0, presence_penalty: 0 });
      expect(row.responseBody).toMatchObject({ object: 'chat.completion', choices: [{ message: { content: 'echo: remember me' } }] });
      // The cache needs its bodies whatever the history keeps.
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: withoutBodies.call.cacheKey! } });
      expect(entry.request).toMatchObject({ messages: user('forget me') });
    });

    it('writes the calls made after a flush that had nothing to write', async () => {
      const { llm, history } = await harness.start();
      await history.flush();

      const result = await llm.sendMessage({ messages: user('after an empty flush') });

      expect(await historyRow(harness, result.call.id)).toMatchObject({ status: 'SUCCESS' });
    });

    it('keeps writing after a call whose text Postgres cannot store as is', async () => {
      const { llm } = await harness.start();

      const withNul = await llm.sendMessage({ messages: user('before\u0000after'), cache: 'USE', tags: ['nul\u0000tag'] });
      const malformed = await failure(llm.sendMessage({ messages: [{ role: 'user', content: 42 as unknown as string }] }));
      const next = await llm.sendMessage({ messages: user('plain') });

      expect(withNul.message.content).toBe('echo: before\u0000after');
      expect(malformed.code).toBe('BAD_USER_INPUT');
      const row = await historyRow(harness, withNul.call.id);
      expect(row.tags).toEqual(['nul\uFFFDtag']);
      expect(row.requestBody).toMatchObject({ messages: user('before\uFFFDafter') });
      expect(await historyRow(harness, malformed.details.callId as string)).toMatchObject({ status: 'ERROR', estimatedPromptTokens: null });
      expect(await historyRow(harness, next.call.id)).toMatchObject({ status: 'SUCCESS' });
      expect(await harness.prisma.cacheEntry.count({ where: { key: withNul.call.cacheKey! } })).toBe(1);
    });

    it('keeps writing after a lone surrogate in a message, metadata nested 1,000 levels deep, and metadata refused at 5,000', async () => {
      // The bound's highest value: deeper metadata is refused before anything is stored.
      const { llm } = await harness.start({ ini: '[Limits]\nMAX_METADATA_DEPTH=1000\n' });
      const nestedLevels = (levels: number) => {
        let deep: unknown = 'bottom';
        for (let level = 0; level < levels; level += 1) deep = { level: deep };
        return deep;
      };

      const lone = await llm.sendMessage({ messages: user('bad \ud800'), cache: 'USE' });
      const nested = await llm.sendMessage({ messages: user('deep'), metadata: nestedLevels(999) });
      const refused = await failure(llm.sendMessage({ messages: user('deeper'), metadata: nestedLevels(5000) }));
      const next = await llm.sendMessage({ messages: user('after them'), cache: 'USE' });

      expect((await historyRow(harness, lone.call.id)).requestBody).toMatchObject({ messages: user('bad \ufffd') });
      const entry = await harness.prisma.cacheEntry.findUniqueOrThrow({ where: { key: lone.call.cacheKey! } });
      expect(entry.response).toMatchObject({ message: { content: 'echo: bad \ufffd' } });
      // Cut where the redactor stops looking for secrets.
      let stored = (await historyRow(harness, nested.call.id)).metadata as unknown;
      for (let level = 0; level < 200; level += 1) stored = (stored as { level: unknown }).level;
      expect(stored).toBe('[nested too deep to store]');
      expect(refused.details).toMatchObject({ field: 'metadata', limit: 'MAX_METADATA_DEPTH', max: 1000 });
      expect(await historyRow(harness, refused.details.callId as string)).toMatchObject({ status: 'ERROR', errorCode: 'BAD_USER_INPUT', metadata: null });
      expect(await historyRow(harness, next.call.id)).toMatchObject({ status: 'SUCCESS', cacheStatus: 'MISS' });
    });
  });

  describe('runtime overrides', () => {
    it('rejects an unregistered API type and stores nothing', async () => {
      const { overrides } = await harness.start();
      const changesBefore = await harness.prisma.overrideChange.count();

      const error = await failure(overrides.set('API_TYPE', 'nope', 'test'));

      expect(error.code).toBe('BAD_USER_INPUT');
      expect(error.message).toContain('"nope"');
      expect(error.message).toContain('openai, azure, openai-compatible');
      expect(overrides.settings().apiType).toBe('openai');
      expect(await harness.prisma.runtimeOverride.count()).toBe(0);
      expect(await harness.prisma.overrideChange.count()).toBe(changesBefore);
    });

    it('rejects an unknown key', async () => {
      const { overrides } = await harness.start();
      const changesBefore = await harness.prisma.overrideChange.count();

      const error = await failure(overrides.set('NOT_A_KEY', '1', 'test'));

      expect(error.code).toBe('BAD_USER_INPUT');
      expect(error.message).toContain('unknown key');
      expect(await harness.prisma.overrideChange.count()).toBe(changesBefore);
    });

    it('rejects a value the config file would reject', async () => {
      const { overrides } = await harness.start();

      const error = await failure(overrides.set('MAX_ATTEMPTS', 'many', 'test'));

      expect(error.code).toBe('BAD_USER_INPUT');
      expect(error.message).toContain('MAX_ATTEMPTS');
      expect(overrides.settings().maxAttempts).toBe(5);
    });

    it('audits set and reset, and a second instance on the same database sees them', async () => {
      const first = await harness.start();
      await first.overrides.set('MODEL', 'gpt-4o', 'alice');
      await first.overrides.set('model', 'gpt-4.1', 'bob');

      const second = await harness.start();
      expect(second.overrides.settings().model).toBe('gpt-4.1');
      await second.llm.sendMessage({ messages: user('which model?') });
      expect(harness.fake.requests[0]!.body.model).toBe('gpt-4.1');

      await second.overrides.reset('MODEL', 'carol');
      const changes = await harness.prisma.overrideChange.findMany({ where: { key: 'MODEL' } });
      expect(changes).toHaveLength(3);
      expect(changes.map(({ key, oldValue, newValue, changedBy }) => ({ key, oldValue, newValue, changedBy }))).toEqual(
        expect.arrayContaining([
          { key: 'MODEL', oldValue: null, newValue: 'gpt-4o', changedBy: 'alice' },
          { key: 'MODEL', oldValue: 'gpt-4o', newValue: 'gpt-4.1', changedBy: 'bob' },
          { key: 'MODEL', oldValue: 'gpt-4.1', newValue: null, changedBy: 'carol' },
        ]),
      );
      expect(await harness.prisma.runtimeOverride.count()).toBe(0);

      await first.overrides.refresh();
      expect(first.overrides.settings().model).toBe('gpt-4o-mini');
      const third = await harness.start();
      expect(third.overrides.settings().model).toBe('gpt-4o-mini');
    });

    it('sends calls to the API type an override forces, until it is reset', async () => {
      const { llm, overrides } = await harness.start();

      await overrides.set('API_TYPE', 'azure', 'test');
      await llm.sendMessage({ messages: user('forced') });
      await overrides.reset('API_TYPE', 'test');
      await llm.sendMessage({ messages: user('back') });

      expect(harness.fake.requests.map((request) => request.flavor)).toEqual(['azure', 'openai']);
    });
  });
});
