import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../logger.ts';
import { createHistoryWriter, type CallRecord } from './history.ts';

const call = (id: string): CallRecord => ({
  id,
  createdAt: new Date(),
  tenant: 'default',
  apiKeyId: null,
  servedByCallId: null,
  kind: 'CHAT',
  apiType: 'openai',
  model: 'gpt-4o-mini',
  status: 'SUCCESS',
  cacheStatus: 'BYPASS',
  cacheKey: null,
  errorCode: null,
  errorMessage: null,
  attemptCount: 0,
  latencyMs: 1,
  promptTokens: null,
  completionTokens: null,
  totalTokens: null,
  estimatedPromptTokens: null,
  costUsd: null,
  templateName: null,
  templateHash: null,
  tags: [],
  metadata: null,
  requestBody: null,
  responseBody: null,
  attempts: [],
});

describe('the history writer on close', () => {
  it('reports how many rows it could not write, so that the process can say so in its exit code', async () => {
    let writes = 0;
    const history = createHistoryWriter({
      spoolDir: mkdtempSync(join(tmpdir(), 'callboard-spool-')),
      database: {
        query: async () => {
          writes += 1;
          throw new Error('database is gone');
        },
      },
      logger: createLogger('silent'),
      closeTimeoutMs: 200,
    });
    history.recordCall(call('0190a8f2-0000-7000-8000-000000000001'));
    history.recordCall(call('0190a8f2-0000-7000-8000-000000000002'));
    history.recordCacheHit('some-key', new Date());

    expect(await history.close()).toEqual({ lost: 3 });
    expect(writes).toBeGreaterThanOrEqual(1);
  });

  it('reports nothing lost when every row was written', async () => {
    const written: unknown[][] = [];
    const history = createHistoryWriter({
      spoolDir: mkdtempSync(join(tmpdir(), 'callboard-spool-')),
      database: {
        query: async <Row,>(_sql: string, parameters?: unknown[]) => {
          written.push(parameters ?? []);
          return [] as Row[];
        },
      },
      logger: createLogger('silent'),
    });
    history.recordCall(call('0190a8f2-0000-7000-8000-000000000003'));

    expect(await history.close()).toEqual({ lost: 0 });
    expect(written).toHaveLength(1);
    expect(JSON.parse(written[0]![2] as string)).toMatchObject([{ id: '0190a8f2-0000-7000-8000-000000000003' }]);
  });
});
