import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.ts';
import { environmentVariableFor, loadConfig, parseOpenAiValue, type ConfigFile } from './config.ts';

const file = (path: string, text: string): ConfigFile => ({ path, text });

function problemsOf(run: () => unknown): ConfigError['problems'] {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it("defaults to TinyTroupe's shipped [OpenAI] values", () => {
    const { config } = loadConfig([], {});
    expect(config.openai).toMatchObject({
      apiType: 'openai',
      azureApiVersion: '2023-05-15',
      model: 'gpt-4o-mini',
      maxTokens: 4000,
      temperature: 1.5,
      topP: null,
      freqPenalty: 0,
      presencePenalty: 0,
      timeout: 60,
      maxAttempts: 5,
      waitingTime: 1,
      exponentialBackoffFactor: 5,
      embeddingModel: 'text-embedding-3-small',
      cacheApiCalls: false,
      cacheFileName: 'openai_api_cache.pickle',
      baseUrl: null,
      maxConcurrentModelCalls: 0,
    });
    expect(config.server).toEqual({ host: '127.0.0.1', port: 4000, graphiql: true, corsOrigins: [], allowedHosts: [] });
    expect(config.database).toEqual({ url: null, dataDir: './.callboard/data' });
    expect(config.prices).toEqual({});
  });

  it("accepts the project's config.ini and keeps TinyTroupe's values in it", () => {
    const text = readFileSync(new URL('../../config.ini', import.meta.url), 'utf8');
    const { config, settings } = loadConfig([file('config.ini', text)], {});
    expect(config.openai).toEqual(loadConfig([], {}).config.openai);
    expect(config.prices['gpt-4o-mini']).toEqual({ inputPerMillion: '0.15', outputPerMillion: '0.6' });
    expect(settings.find((setting) => setting.key === 'MODEL')).toMatchObject({ source: 'FILE', origin: 'config.ini' });
  });

  it('layers defaults < files in order < environment, and reports where each value came from', () => {
    const { config, settings } = loadConfig(
      [file('/repo/config.ini', '[OpenAI]\nMODEL=gpt-4o\nMAX_TOKENS=100\n'), file('/cwd/config.ini', '[OpenAI]\nMODEL=gpt-4.1\n')],
      { CALLBOARD_OPENAI__MAX_TOKENS: '200', DATABASE_URL: 'postgresql://u:pw@db:5432/x', PORT: '8080' },
    );
    expect(config.openai.model).toBe('gpt-4.1');
    expect(config.openai.maxTokens).toBe(200);
    expect(config.openai.temperature).toBe(1.5);
    expect(config.database.url).toBe('postgresql://u:pw@db:5432/x');
    expect(config.server.port).toBe(8080);
    const find = (key: string) => settings.find((setting) => setting.key === key);
    expect(find('MODEL')).toMatchObject({ value: 'gpt-4.1', source: 'FILE', origin: '/cwd/config.ini' });
    expect(find('MAX_TOKENS')).toMatchObject({ value: '200', source: 'ENVIRONMENT', origin: 'CALLBOARD_OPENAI__MAX_TOKENS' });
    expect(find('TEMPERATURE')).toMatchObject({ source: 'DEFAULT', origin: null });
    expect(find('URL')).toMatchObject({ value: 'postgresql://u:***@db:5432/x', source: 'ENVIRONMENT', origin: 'DATABASE_URL' });
  });

  it('reads keys and sections case-insensitively, as configparser does, and accepts TinyTroupe LOGLEVEL', () => {
    const { config } = loadConfig([file('a.ini', '[openai]\nmodel=gpt-4o\ncache_api_calls=yes\n[logging]\nLOGLEVEL=ERROR\n[Simulation]\nRANDOM_SEED=42\n')], {});
    expect(config.openai.model).toBe('gpt-4o');
    expect(config.openai.cacheApiCalls).toBe(true);
    expect(config.logging.level).toBe('error');
  });

  it('treats an empty value as unset: TOP_P absent means not sent', () => {
    expect(loadConfig([file('a.ini', '[OpenAI]\nTOP_P=\n')], {}).config.openai.topP).toBeNull();
    expect(loadConfig([file('a.ini', '[OpenAI]\nTOP_P=0.9\n')], {}).config.openai.topP).toBe(0.9);
  });

  it('reads secrets only from the environment and shows them only as set or unset', () => {
    const { config, settings } = loadConfig([], { OPENAI_API_KEY: 'sk-secret-value', AZURE_OPENAI_ENDPOINT: 'https://x.openai.azure.com' });
    expect(config.secrets).toEqual({ openaiApiKey: 'sk-secret-value', azureOpenaiEndpoint: 'https://x.openai.azure.com', azureOpenaiKey: null, masterKey: null });
    const secrets = settings.filter((setting) => setting.secret);
    expect(secrets.map((setting) => [setting.key, setting.value])).toEqual([
      ['OPENAI_API_KEY', 'set'],
      ['AZURE_OPENAI_ENDPOINT', 'set'],
      ['AZURE_OPENAI_KEY', null],
      ['CALLBOARD_MASTER_KEY', null],
    ]);
    expect(JSON.stringify(settings)).not.toContain('sk-secret-value');
  });

  it('rejects a secret written in a file, pointing to the environment', () => {
    const [problem] = problemsOf(() => loadConfig([file('a.ini', '[OpenAI]\nAPI_KEY=sk-1\n')], {}));
    expect(problem).toMatchObject({ source: 'a.ini', section: 'OpenAI', key: 'API_KEY' });
    expect(problem!.message).toContain('OPENAI_API_KEY');
  });

  it('reports every problem at once, each with its file, section, key and reason', () => {
    const problems = problemsOf(() =>
      loadConfig(
        [file('/etc/callboard.ini', '[OpenAI]\nTEMPERATURE=hot\nMAX_TOKENS=-5\nMAX_ATTEMPTS=2.5\nCACHE_API_CALLS=maybe\nMODLE=gpt-4o\nBASE_URL=not a url\nREASONING_EFFORT=extreme\n[Prices]\ngpt-4o=2.5\n')],
        { CALLBOARD_SERVER__PORT: '99999', CALLBOARD_OPENAI__NOPE: '1', CALLBOARD_WHATEVER: 'x', DATABASE_URL: 'mysql://x' },
      ),
    );
    const summary = problems.map((problem) => `${problem.source} [${problem.section}] ${problem.key}`);
    expect(summary).toEqual(
      expect.arrayContaining([
        '/etc/callboard.ini [OpenAI] TEMPERATURE',
        '/etc/callboard.ini [OpenAI] MAX_TOKENS',
        '/etc/callboard.ini [OpenAI] MAX_ATTEMPTS',
        '/etc/callboard.ini [OpenAI] CACHE_API_CALLS',
        '/etc/callboard.ini [OpenAI] MODLE',
        '/etc/callboard.ini [OpenAI] BASE_URL',
        '/etc/callboard.ini [OpenAI] REASONING_EFFORT',
        '/etc/callboard.ini [Prices] gpt-4o',
        'CALLBOARD_SERVER__PORT [Server] PORT',
        'CALLBOARD_OPENAI__NOPE [OpenAI] NOPE',
        'CALLBOARD_WHATEVER [] CALLBOARD_WHATEVER',
        'DATABASE_URL [Database] URL',
      ]),
    );
    expect(problems).toHaveLength(12);
    const message = (() => {
      try {
        loadConfig([file('x.ini', '[OpenAI]\nTEMPERATURE=hot\n')], {});
      } catch (error) {
        return (error as Error).message;
      }
    })();
    expect(message).toBe('Invalid configuration (1 problem):\n  - x.ini: [OpenAI] TEMPERATURE: expected a number, got "hot"');
  });

  it('rejects an API_TYPE that names no registered provider, naming where it was set', () => {
    const [problem] = problemsOf(() => loadConfig([file('a.ini', '[OpenAI]\nAPI_TYPE=anthropic\n')], {}, { apiTypes: ['openai', 'azure'] }));
    expect(problem).toEqual({ source: 'a.ini', section: 'OpenAI', key: 'API_TYPE', message: 'unknown API type "anthropic"; registered: openai, azure' });
    expect(loadConfig([file('a.ini', '[OpenAI]\nAPI_TYPE=Azure\n')], {}, { apiTypes: ['openai', 'azure'] }).config.openai.apiType).toBe('azure');
  });

  it('names the environment variable of every key by one rule', () => {
    expect(environmentVariableFor('OpenAI', 'MODEL')).toBe('CALLBOARD_OPENAI__MODEL');
    const { config } = loadConfig([], { [environmentVariableFor('Cache', 'TTL')]: '30', [environmentVariableFor('Server', 'GRAPHIQL')]: 'off' });
    expect(config.cache.ttlSeconds).toBe(30);
    expect(config.server.graphiql).toBe(false);
  });

  it('reads CORS_ORIGINS as exact origins and ALLOWED_HOSTS as host names, both normalised as a browser sends them', () => {
    const ini = '[Server]\nCORS_ORIGINS=http://LOCALHOST:5173/, https://dashboard.example:443 ,http://localhost:5173\nALLOWED_HOSTS=Callboard.Internal, [FD00::1],10.0.0.7.\n';
    const { config } = loadConfig([file('a.ini', ini)], {});
    expect(config.server.corsOrigins).toEqual(['http://localhost:5173', 'https://dashboard.example']);
    expect(config.server.allowedHosts).toEqual(['callboard.internal', '[fd00::1]', '10.0.0.7']);
    const problems = problemsOf(() =>
      loadConfig([file('b.ini', '[Server]\nCORS_ORIGINS=*, http://a.example/path, ftp://b.example\nALLOWED_HOSTS=http://c.example, d.example:8080, e.example/x\n')], {}),
    );
    expect(problems.map((problem) => [problem.key, problem.message])).toEqual([
      ['CORS_ORIGINS', expect.stringContaining('"*" is not accepted')],
      ['ALLOWED_HOSTS', expect.stringContaining('"http://c.example"')],
    ]);
    expect(problems[0]!.message).toContain('"http://a.example/path"');
    expect(problems[0]!.message).toContain('"ftp://b.example"');
    expect(problems[1]!.message).toContain('"d.example:8080"');
    expect(problems[1]!.message).toContain('"e.example/x"');
  });

  it('bounds the whole call by CALL_DEADLINE, 300 s unless set', () => {
    expect(loadConfig([], {}).config.openai.callDeadline).toBe(300);
    expect(loadConfig([file('a.ini', '[OpenAI]\nCALL_DEADLINE=12.5\n')], {}).config.openai.callDeadline).toBe(12.5);
    expect(problemsOf(() => loadConfig([file('a.ini', '[OpenAI]\nCALL_DEADLINE=0\n')], {}))).toMatchObject([{ section: 'OpenAI', key: 'CALL_DEADLINE' }]);
  });

  it('refuses durations no timer can hold (2^31-1 ms), each with its file, section and key', () => {
    const tooLong = String(2 ** 31 / 1000);
    const problems = problemsOf(() =>
      loadConfig(
        [file('/etc/long.ini', `[OpenAI]\nTIMEOUT=${tooLong}\nWAITING_TIME=${tooLong}\nMAX_WAITING_TIME=1e9\nCALL_DEADLINE=${tooLong}\n[History]\nFLUSH_INTERVAL_MS=${2 ** 31}\n[Cache]\nTTL=1e12\n`)],
        {},
      ),
    );
    expect(problems.map((problem) => `${problem.source}: [${problem.section}] ${problem.key}`)).toEqual([
      '/etc/long.ini: [OpenAI] TIMEOUT',
      '/etc/long.ini: [OpenAI] WAITING_TIME',
      '/etc/long.ini: [OpenAI] MAX_WAITING_TIME',
      '/etc/long.ini: [OpenAI] CALL_DEADLINE',
      '/etc/long.ini: [Cache] TTL',
      '/etc/long.ini: [History] FLUSH_INTERVAL_MS',
    ]);
    expect(problems[0]!.message).toBe(`must be at most 2147483.647 seconds (the longest timer Node.js holds), got ${tooLong}`);
    // The longest timer itself is fine.
    expect(loadConfig([file('a.ini', '[OpenAI]\nCALL_DEADLINE=2147483.647\nTIMEOUT=2147483\n')], {}).config.openai.callDeadline).toBe(2147483.647);
    // Runtime overrides go through the same rule.
    expect(parseOpenAiValue('CALL_DEADLINE', tooLong)).toMatchObject({ ok: false });
  });

  it("refuses a section misspelt from one of Callboard's, and leaves TinyTroupe's and other programs' sections alone", () => {
    const problems = problemsOf(() =>
      loadConfig([file('/etc/typos.ini', '[OpenIA]\nMODEL=gpt-4o\n[Sever]\nPORT=1\n[history]\nBATCH_SIZE=5\n[Prces]\nx=1, 2\n[Open_AI]\nMODEL=x\n[Cach]\nTTL=1\n')], {}),
    );
    expect(problems).toEqual([
      { source: '/etc/typos.ini', section: 'OpenIA', key: '', message: 'unknown section; did you mean [OpenAI]?' },
      { source: '/etc/typos.ini', section: 'Sever', key: '', message: 'unknown section; did you mean [Server]?' },
      { source: '/etc/typos.ini', section: 'Prces', key: '', message: 'unknown section; did you mean [Prices]?' },
      { source: '/etc/typos.ini', section: 'Open_AI', key: '', message: 'unknown section; did you mean [OpenAI]?' },
      { source: '/etc/typos.ini', section: 'Cach', key: '', message: 'unknown section; did you mean [Cache]?' },
    ]);
    expect(new ConfigError(problems.slice(1, 2)).message).toBe('Invalid configuration (1 problem):\n  - /etc/typos.ini: [Sever]: unknown section; did you mean [Server]?');

    const tinyTroupe = '[Simulation]\nPARALLEL_AGENT_ACTIONS=True\n[Cognition]\nMIN_EPISODE_LENGTH=10\n[ActionGenerator]\nMAX_ATTEMPTS=2\n[Logging]\nLOGLEVEL=ERROR\n[MyTool]\nANYTHING=1\n[Logs]\nX=1\n';
    const { config } = loadConfig([file('tinytroupe.ini', tinyTroupe), file('spaced.ini', '[ OpenAi ]\nMODEL=gpt-4o\n')], {});
    expect(config.openai.maxAttempts).toBe(5);
    // Section names are read case-insensitively and trimmed, so this one is no misspelling.
    expect(config.openai.model).toBe('gpt-4o');
    expect(config.logging.level).toBe('error');
  });

  it('serves /metrics on the main server unless [Metrics] PORT names a separate port (on 127.0.0.1 unless HOST says otherwise)', () => {
    expect(loadConfig([], {}).config.metrics).toEqual({ port: null, host: '127.0.0.1', maxModelLabels: 50, maxTenantLabels: 100 });
    const separate = loadConfig([file('/etc/callboard.ini', '[Metrics]\nPORT=9464\nMAX_MODEL_LABELS=10\n')], { CALLBOARD_METRICS__HOST: '0.0.0.0' });
    expect(separate.config.metrics).toEqual({ port: 9464, host: '0.0.0.0', maxModelLabels: 10, maxTenantLabels: 100 });
    expect(separate.settings.find((setting) => setting.section === 'Metrics' && setting.key === 'PORT')).toMatchObject({ value: '9464', source: 'FILE', origin: '/etc/callboard.ini' });
    const problems = problemsOf(() => loadConfig([file('/etc/bad.ini', '[Metrics]\nPORT=70000\nMAX_TENANT_LABELS=0\n')], {}));
    expect(problems.map((problem) => `${problem.source}: [${problem.section}] ${problem.key}`)).toEqual(['/etc/bad.ini: [Metrics] PORT', '/etc/bad.ini: [Metrics] MAX_TENANT_LABELS']);
  });

  it('parses prices as input and output USD per million tokens', () => {
    const { config } = loadConfig([file('a.ini', '[Prices]\nmy-model = 1.5 , 6\n')], {});
    expect(config.prices).toEqual({ 'my-model': { inputPerMillion: '1.5', outputPerMillion: '6' } });
  });

  it('keeps the history forever unless RETENTION_DAYS says otherwise, and purges every 300 s', () => {
    expect(loadConfig([], {}).config.history).toMatchObject({ retentionDays: null, purgeIntervalSeconds: 300, purgeBatchSize: 1000 });
    expect(loadConfig([file('a.ini', '[History]\nRETENTION_DAYS=90\n')], {}).config.history.retentionDays).toBe(90);
    expect(() => loadConfig([file('a.ini', '[History]\nRETENTION_DAYS=0\n')], {})).toThrow(/RETENTION_DAYS/);
    expect(() => loadConfig([file('a.ini', '[History]\nPURGE_BATCH_SIZE=0\n')], {})).toThrow(/PURGE_BATCH_SIZE/);
  });

  it('keeps prices exact, and refuses what is not a plain decimal of at most 6 places', () => {
    const { config } = loadConfig([file('a.ini', '[Prices]\nfine = 0.000001, 12.500000\n')], {});
    expect(config.prices).toEqual({ fine: { inputPerMillion: '0.000001', outputPerMillion: '12.5' } });
    for (const bad of ['0.0000001, 1', '1e-3, 1', '-1, 1', '0x10, 1', '1']) {
      expect(() => loadConfig([file('b.ini', `[Prices]\nbad = ${bad}\n`)], {}), bad).toThrow(/at most 6 decimal places/);
    }
  });
});

describe('parseOpenAiValue', () => {
  it('parses a value as the config file would, and rejects unknown keys', () => {
    expect(parseOpenAiValue('temperature', '0.2')).toEqual({ ok: true, value: 0.2, field: 'temperature' });
    expect(parseOpenAiValue('MAX_TOKENS', 'many')).toMatchObject({ ok: false });
    const unknown = parseOpenAiValue('NOT_A_KEY', '1');
    expect(unknown.ok).toBe(false);
    expect(!unknown.ok && unknown.message).toContain('unknown key');
  });
});
