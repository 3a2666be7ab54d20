import { parse as parseIni } from 'ini';
import { z } from 'zod';
import { ConfigError, type ConfigProblem } from '../errors.ts';
import { formatPicoUsd, parseDecimal, priceScale, usdScale, type Usd } from '../money.ts';

/** The USD price of a model, per million tokens, as exact decimal strings (at most 6 decimals). */
export interface ModelPrice {
  inputPerMillion: Usd;
  outputPerMillion: Usd;
}

/** TinyTroupe's `[OpenAI]` section, with Callboard's additions. */
export interface OpenAiConfig {
  apiType: string;
  azureApiVersion: string;
  azureEmbeddingModelApiVersion: string | null;
  model: string;
  reasoningModel: string | null;
  reasoningEffort: string | null;
  maxTokens: number;
  temperature: number;
  topP: number | null;
  freqPenalty: number;
  presencePenalty: number;
  /** Seconds, per attempt. */
  timeout: number;
  maxAttempts: number;
  /** Seconds: the first backoff wait. */
  waitingTime: number;
  exponentialBackoffFactor: number;
  /** Seconds: the cap on a single backoff wait. */
  maxWaitingTime: number;
  /** Seconds: the longest a whole call may take, every attempt and wait included. */
  callDeadline: number;
  /** Fraction (0..1) of each backoff wait that is randomised. */
  backoffJitter: number;
  embeddingModel: string;
  cacheApiCalls: boolean;
  /** Accepted for TinyTroupe compatibility; Callboard keeps its cache in the database. */
  cacheFileName: string;
  baseUrl: string | null;
  /** 0 means unbounded. */
  maxConcurrentModelCalls: number;
}

export interface Config {
  openai: OpenAiConfig;
  /** `corsOrigins`: exact origins answered with CORS headers; `allowedHosts`: names the Host header may carry in open mode. */
  server: { host: string; port: number; graphiql: boolean; corsOrigins: string[]; allowedHosts: string[] };
  /** `url` null means the embedded PGlite database in `dataDir`. */
  database: { url: string | null; dataDir: string };
  logging: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /** `ttlSeconds` null means entries never expire. */
  cache: { ttlSeconds: number | null; memoryEntries: number; memoryMegabytes: number; sharedAcrossTenants: boolean };
  /** `retentionDays` null keeps calls forever; `purgeIntervalSeconds` 0 turns the purge off. */
  history: {
    storeBodies: boolean;
    batchSize: number;
    flushIntervalMs: number;
    maxPendingRows: number;
    spoolDir: string;
    rollupIntervalSeconds: number;
    retentionDays: number | null;
    purgeIntervalSeconds: number;
    purgeBatchSize: number;
  };
  prompts: { dir: string };
  /** Bounds on what one GraphQL request may ask; `analyticsStatementTimeoutMs` 0 means none. */
  limits: {
    maxQueryDepth: number;
    maxAliases: number;
    maxQueryTokens: number;
    maxQueryCost: number;
    maxDirectives: number;
    maxPaidOperations: number;
    analyticsStatementTimeoutMs: number;
    /** Bytes of one request body. */
    maxBodyBytes: number;
    /** Chat messages in one call. */
    maxMessages: number;
    /** Characters (UTF-16 units) of one call's messages, texts to embed or text to count. */
    maxCharactersPerCall: number;
    maxMetadataDepth: number;
    /** Bytes of a call's metadata as JSON. */
    maxMetadataBytes: number;
    maxTags: number;
    maxTagLength: number;
    /** Subscriptions one instance serves at once; 0: none. */
    maxSubscriptions: number;
  };
  /**
   * GET /metrics. `port` null: served on the main server (protected like the API); a number: a separate
   * listener on `host` serving only /metrics, unauthenticated. The label bounds cap the distinct models and
   * tenants a metric tells apart (the rest are "other").
   */
  metrics: { port: number | null; host: string; maxModelLabels: number; maxTenantLabels: number };
  prices: Record<string, ModelPrice>;
  /** From the environment only; never logged, stored or answered. */
  secrets: { openaiApiKey: string | null; azureOpenaiEndpoint: string | null; azureOpenaiKey: string | null; masterKey: string | null };
}

export type SettingSource = 'DEFAULT' | 'FILE' | 'ENVIRONMENT';

/** One effective setting and where it came from. Secrets carry only whether they are set. */
export interface Setting {
  section: string;
  key: string;
  value: string | null;
  source: SettingSource;
  /** The file path or environment variable that set the value; null for defaults. */
  origin: string | null;
  secret: boolean;
}

export interface LoadedConfig {
  config: Config;
  settings: Setting[];
}

/** A configuration file's text and where it was read from. */
export interface ConfigFile {
  path: string;
  text: string;
}

const booleanWords: Record<string, boolean> = {
  true: true, yes: true, on: true, '1': true,
  false: false, no: false, off: false, '0': false,
};

const configBoolean = z.string().transform((value, context) => {
  const parsed = booleanWords[value.trim().toLowerCase()];
  if (parsed === undefined) {
    context.addIssue({ code: 'custom', message: `expected a boolean (True/False, yes/no, on/off, 1/0), got "${value}"` });
    return z.NEVER;
  }
  return parsed;
});

function configNumber(check: (schema: z.ZodNumber) => z.ZodNumber = (schema) => schema) {
  return z.string().transform((value, context) => {
    const trimmed = value.trim();
    const parsed = trimmed === '' ? Number.NaN : Number(trimmed);
    if (!Number.isFinite(parsed)) {
      context.addIssue({ code: 'custom', message: `expected a number, got "${value}"` });
      return z.NEVER;
    }
    const checked = check(z.number()).safeParse(parsed);
    if (!checked.success) {
      for (const issue of checked.error.issues) context.addIssue({ code: 'custom', message: `${issue.message}, got ${parsed}` });
      return z.NEVER;
    }
    return checked.data;
  });
}

const integer = (min: number, max = Number.MAX_SAFE_INTEGER) => configNumber((schema) => schema.int().min(min).max(max));
/** The longest delay a Node.js timer holds (2^31-1 ms, about 24.8 days); a longer one fires at once. */
export const maxTimerMs = 2 ** 31 - 1;
/** Seconds that end up in a timer: beyond maxTimerMs it would fire at once instead of never. */
const timerSeconds = (check: (schema: z.ZodNumber) => z.ZodNumber) =>
  configNumber((schema) => check(schema).max(maxTimerMs / 1000, `must be at most ${maxTimerMs / 1000} seconds (the longest timer Node.js holds)`));
const text = z.string().trim().min(1, 'must not be empty');
/** An empty value means "not set". */
const optional = <T extends z.ZodType<unknown, string>>(schema: T) =>
  z.string().transform((value, context) => {
    if (value.trim() === '') return null;
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) context.addIssue({ code: 'custom', message: issue.message });
      return z.NEVER;
    }
    return parsed.data as z.output<T>;
  });
const url = text.refine((value) => URL.canParse(value), 'expected a URL such as http://127.0.0.1:11434/v1');
const databaseUrl = text.refine(
  (value) => /^postgres(ql)?:\/\//.test(value) && URL.canParse(value),
  'expected a Postgres URL such as postgresql://user@127.0.0.1:5432/callboard',
);
/** A comma-separated list, each item checked and normalised by `parse`; empty: none. */
function commaList(parse: (item: string) => { value: string } | { problem: string }) {
  return z.string().transform((value, context) => {
    const items: string[] = [];
    for (const item of value.split(',').map((part) => part.trim()).filter((part) => part !== '')) {
      const parsed = parse(item);
      if ('problem' in parsed) context.addIssue({ code: 'custom', message: parsed.problem });
      else if (!items.includes(parsed.value)) items.push(parsed.value);
    }
    return items;
  });
}
/** A bare http(s) origin, in the form browsers send it in the Origin header. */
const corsOrigins = commaList((item) => {
  if (item === '*') return { problem: 'expected exact origins such as http://localhost:5173; "*" is not accepted' };
  const url = URL.canParse(item) ? new URL(item) : null;
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.pathname !== '/' || url.search || url.hash || url.username) {
    return { problem: `expected an origin such as http://localhost:5173 (scheme, host and port only), got "${item}"` };
  }
  return { value: url.origin };
});
/** A host name or IP address without port, as a URL would normalise it. */
const hostNames = commaList((item) => {
  const url = URL.canParse(`http://${item}`) ? new URL(`http://${item}`) : null;
  if (!url || url.port || url.host !== url.hostname || url.pathname !== '/' || url.search || url.hash || url.username || item.includes('/')) {
    return { problem: `expected a host name without scheme or port such as callboard.internal, got "${item}"` };
  }
  return { value: url.hostname.replace(/\.$/, '') };
});
const logLevel = z
  .string()
  .transform((value) => value.trim().toLowerCase())
  .pipe(z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { message: 'expected one of fatal, error, warn, info, debug, trace, silent' }));

interface KeySpec {
  /** Where the value lands in `Config`. */
  path: [keyof Config, string];
  default: string;
  schema: z.ZodType<unknown, string>;
  /** Other names the key is accepted under (TinyTroupe's own). */
  aliases?: string[];
}

const maxTtlSeconds = 100 * 365 * 24 * 3600;

/** Every key Callboard reads, by section. The defaults are TinyTroupe's shipped values. */
const sections: Record<string, Record<string, KeySpec>> = {
  OpenAI: {
    API_TYPE: { path: ['openai', 'apiType'], default: 'openai', schema: text.transform((value) => value.toLowerCase()) },
    AZURE_API_VERSION: { path: ['openai', 'azureApiVersion'], default: '2023-05-15', schema: text },
    AZURE_EMBEDDING_MODEL_API_VERSION: { path: ['openai', 'azureEmbeddingModelApiVersion'], default: '', schema: optional(text) },
    MODEL: { path: ['openai', 'model'], default: 'gpt-4o-mini', schema: text },
    REASONING_MODEL: { path: ['openai', 'reasoningModel'], default: '', schema: optional(text) },
    REASONING_EFFORT: {
      path: ['openai', 'reasoningEffort'],
      default: '',
      schema: optional(z.enum(['minimal', 'low', 'medium', 'high'], { message: 'expected minimal, low, medium or high' })),
    },
    MAX_TOKENS: { path: ['openai', 'maxTokens'], default: '4000', schema: integer(1) },
    TEMPERATURE: { path: ['openai', 'temperature'], default: '1.5', schema: configNumber((schema) => schema.min(0).max(2)) },
    TOP_P: { path: ['openai', 'topP'], default: '', schema: optional(configNumber((schema) => schema.min(0).max(1))) },
    FREQ_PENALTY: { path: ['openai', 'freqPenalty'], default: '0.0', schema: configNumber((schema) => schema.min(-2).max(2)) },
    PRESENCE_PENALTY: { path: ['openai', 'presencePenalty'], default: '0.0', schema: configNumber((schema) => schema.min(-2).max(2)) },
    TIMEOUT: { path: ['openai', 'timeout'], default: '60', schema: timerSeconds((schema) => schema.positive()) },
    MAX_ATTEMPTS: { path: ['openai', 'maxAttempts'], default: '5', schema: integer(1, 100) },
    WAITING_TIME: { path: ['openai', 'waitingTime'], default: '1', schema: timerSeconds((schema) => schema.min(0)) },
    EXPONENTIAL_BACKOFF_FACTOR: { path: ['openai', 'exponentialBackoffFactor'], default: '5', schema: configNumber((schema) => schema.min(1)) },
    MAX_WAITING_TIME: { path: ['openai', 'maxWaitingTime'], default: '60', schema: timerSeconds((schema) => schema.min(0)) },
    CALL_DEADLINE: { path: ['openai', 'callDeadline'], default: '300', schema: timerSeconds((schema) => schema.positive()) },
    BACKOFF_JITTER: { path: ['openai', 'backoffJitter'], default: '0.2', schema: configNumber((schema) => schema.min(0).max(1)) },
    EMBEDDING_MODEL: { path: ['openai', 'embeddingModel'], default: 'text-embedding-3-small', schema: text },
    CACHE_API_CALLS: { path: ['openai', 'cacheApiCalls'], default: 'False', schema: configBoolean },
    CACHE_FILE_NAME: { path: ['openai', 'cacheFileName'], default: 'openai_api_cache.pickle', schema: text },
    BASE_URL: { path: ['openai', 'baseUrl'], default: '', schema: optional(url) },
    MAX_CONCURRENT_MODEL_CALLS: { path: ['openai', 'maxConcurrentModelCalls'], default: '0', schema: integer(0) },
  },
  Server: {
    HOST: { path: ['server', 'host'], default: '127.0.0.1', schema: text },
    PORT: { path: ['server', 'port'], default: '4000', schema: integer(0, 65535) },
    GRAPHIQL: { path: ['server', 'graphiql'], default: 'True', schema: configBoolean },
    CORS_ORIGINS: { path: ['server', 'corsOrigins'], default: '', schema: corsOrigins },
    ALLOWED_HOSTS: { path: ['server', 'allowedHosts'], default: '', schema: hostNames },
  },
  Database: {
    URL: { path: ['database', 'url'], default: '', schema: optional(databaseUrl) },
    DATA_DIR: { path: ['database', 'dataDir'], default: './.callboard/data', schema: text },
  },
  Logging: {
    LEVEL: { path: ['logging', 'level'], default: 'info', schema: logLevel, aliases: ['LOGLEVEL'] },
  },
  Cache: {
    // An expiry must stay a valid date: a century is far more than any cache needs.
    TTL: {
      path: ['cache', 'ttlSeconds'],
      default: '',
      schema: optional(configNumber((schema) => schema.positive().max(maxTtlSeconds, `must be at most ${maxTtlSeconds} seconds (100 years); leave it empty for no expiry`))),
    },
    MEMORY_ENTRIES: { path: ['cache', 'memoryEntries'], default: '10000', schema: integer(0) },
    MEMORY_MB: { path: ['cache', 'memoryMegabytes'], default: '64', schema: configNumber((schema) => schema.positive().max(1_000_000)) },
    SHARED_ACROSS_TENANTS: { path: ['cache', 'sharedAcrossTenants'], default: 'False', schema: configBoolean },
  },
  History: {
    STORE_BODIES: { path: ['history', 'storeBodies'], default: 'True', schema: configBoolean },
    BATCH_SIZE: { path: ['history', 'batchSize'], default: '200', schema: integer(1, 10_000) },
    FLUSH_INTERVAL_MS: { path: ['history', 'flushIntervalMs'], default: '50', schema: integer(1, 60_000) },
    MAX_PENDING_ROWS: { path: ['history', 'maxPendingRows'], default: '10000', schema: integer(1) },
    SPOOL_DIR: { path: ['history', 'spoolDir'], default: './.callboard/spool', schema: text },
    ROLLUP_INTERVAL_SECONDS: { path: ['history', 'rollupIntervalSeconds'], default: '60', schema: integer(0, 86_400) },
    // The retention purge (src/llm/retention.ts): calls older than RETENTION_DAYS, and expired cache entries.
    RETENTION_DAYS: { path: ['history', 'retentionDays'], default: '', schema: optional(integer(1, 36_500)) },
    PURGE_INTERVAL_SECONDS: { path: ['history', 'purgeIntervalSeconds'], default: '300', schema: integer(0, 86_400) },
    PURGE_BATCH_SIZE: { path: ['history', 'purgeBatchSize'], default: '1000', schema: integer(1, 100_000) },
  },
  Metrics: {
    PORT: { path: ['metrics', 'port'], default: '', schema: optional(integer(0, 65535)) },
    HOST: { path: ['metrics', 'host'], default: '127.0.0.1', schema: text },
    MAX_MODEL_LABELS: { path: ['metrics', 'maxModelLabels'], default: '50', schema: integer(1, 10_000) },
    MAX_TENANT_LABELS: { path: ['metrics', 'maxTenantLabels'], default: '100', schema: integer(1, 10_000) },
  },
  Prompts: {
    DIR: { path: ['prompts', 'dir'], default: './prompts', schema: text },
  },
  Limits: {
    // The parser recurses once per level: past a few hundred levels the refusal itself gets costly.
    MAX_QUERY_DEPTH: { path: ['limits', 'maxQueryDepth'], default: '15', schema: integer(1, 200) },
    MAX_ALIASES: { path: ['limits', 'maxAliases'], default: '30', schema: integer(0) },
    MAX_QUERY_TOKENS: { path: ['limits', 'maxQueryTokens'], default: '5000', schema: integer(1) },
    MAX_QUERY_COST: { path: ['limits', 'maxQueryCost'], default: '50000', schema: integer(1) },
    MAX_DIRECTIVES: { path: ['limits', 'maxDirectives'], default: '50', schema: integer(0) },
    MAX_PAID_OPERATIONS: { path: ['limits', 'maxPaidOperations'], default: '5', schema: integer(0) },
    ANALYTICS_STATEMENT_TIMEOUT_MS: { path: ['limits', 'analyticsStatementTimeoutMs'], default: '15000', schema: integer(0) },
    // What one request or call may carry (src/http/body-limit.ts, src/llm/input-limits.ts).
    MAX_BODY_BYTES: { path: ['limits', 'maxBodyBytes'], default: '4194304', schema: integer(1) },
    MAX_MESSAGES: { path: ['limits', 'maxMessages'], default: '1000', schema: integer(1) },
    MAX_CHARACTERS_PER_CALL: { path: ['limits', 'maxCharactersPerCall'], default: '1000000', schema: integer(1) },
    MAX_METADATA_DEPTH: { path: ['limits', 'maxMetadataDepth'], default: '20', schema: integer(1, 1000) },
    MAX_METADATA_BYTES: { path: ['limits', 'maxMetadataBytes'], default: '65536', schema: integer(2) },
    MAX_TAGS: { path: ['limits', 'maxTags'], default: '20', schema: integer(0) },
    MAX_TAG_LENGTH: { path: ['limits', 'maxTagLength'], default: '200', schema: integer(1) },
    // Open subscriptions (callEvents) per instance: each holds a connection and a bounded buffer.
    MAX_SUBSCRIPTIONS: { path: ['limits', 'maxSubscriptions'], default: '100', schema: integer(0) },
  },
};

/** The free-form section of model prices: `model = input, output` in USD per million tokens. */
const pricesSection = 'Prices';
const price = z.string().transform((value, context) => {
  const parts = value.split(',').map((part) => part.trim());
  // Exact decimals: 10^-6 USD per million tokens is a picodollar per token, the unit of every cost.
  const amounts = parts.map((part) => parseDecimal(part, priceScale));
  if (parts.length !== 2 || amounts.some((amount) => amount === null || amount < 0n)) {
    context.addIssue({
      code: 'custom',
      message: `expected "input, output" USD per million tokens such as "0.15, 0.60" (plain decimals, at most ${priceScale} decimal places), got "${value}"`,
    });
    return z.NEVER;
  }
  const usd = (amount: bigint) => formatPicoUsd(amount * 10n ** BigInt(usdScale - priceScale));
  return { inputPerMillion: usd(amounts[0]!), outputPerMillion: usd(amounts[1]!) } satisfies ModelPrice;
});

/** Secrets and the variables they come from: the environment only, as in TinyTroupe. */
const secretVariables = {
  openaiApiKey: 'OPENAI_API_KEY',
  azureOpenaiEndpoint: 'AZURE_OPENAI_ENDPOINT',
  azureOpenaiKey: 'AZURE_OPENAI_KEY',
  masterKey: 'CALLBOARD_MASTER_KEY',
} as const satisfies Record<keyof Config['secrets'], string>;

/** Conventional variables that set a key without the `CALLBOARD_` prefix. */
const conventionalVariables: Record<string, [section: string, key: string]> = {
  DATABASE_URL: ['Database', 'URL'],
  PORT: ['Server', 'PORT'],
};

const environmentPrefix = 'CALLBOARD_';
/** The environment variable naming rule: `CALLBOARD_<SECTION>__<KEY>`, e.g. `CALLBOARD_OPENAI__MODEL`. */
export function environmentVariableFor(section: string, key: string): string {
  return `${environmentPrefix}${section.toUpperCase()}__${key.toUpperCase()}`;
}

/** Names the environment may hold that are not settings: `CALLBOARD_CONFIG` names a file, `CALLBOARD_MASTER_KEY` is a secret. */
const environmentNotSettings = new Set(['CALLBOARD_CONFIG', 'CALLBOARD_MASTER_KEY']);

interface RawValue {
  value: string;
  source: SettingSource;
  origin: string | null;
}

function findSection(name: string): string | undefined {
  return Object.keys(sections).find((section) => section.toLowerCase() === name.toLowerCase()) ??
    (name.toLowerCase() === pricesSection.toLowerCase() ? pricesSection : undefined);
}

/** TinyTroupe's own sections, which its config.ini holds beside [OpenAI] and [Logging]: not ours to judge. */
const tinyTroupeSections = ['Simulation', 'Cognition', 'ActionGenerator'];

/**
 * The section of ours an unknown name looks like a misspelling of: the same letters once case,
 * spaces, underscores and hyphens are dropped, or at most two letters off (one for short names).
 * Other unknown sections belong to other programs reading the same file and are left alone.
 */
function sectionMisspelt(name: string): string | undefined {
  const normalized = (text: string) => text.toLowerCase().replace(/[\s_-]+/g, '');
  const wanted = normalized(name);
  if (tinyTroupeSections.some((section) => normalized(section) === wanted)) return undefined;
  const candidates = [...Object.keys(sections), pricesSection].map((section) => ({ section, distance: editDistance(wanted, normalized(section)) }));
  const best = candidates.sort((a, b) => a.distance - b.distance)[0]!;
  return best.distance <= (wanted.length <= 4 ? 1 : 2) ? best.section : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_row, i) => Array.from({ length: b.length + 1 }, (_cell, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = best;
    }
  }
  return rows[a.length]![b.length]!;
}

function findKey(section: string, key: string): string | undefined {
  const specs = sections[section] ?? {};
  const upper = key.toUpperCase();
  return Object.entries(specs).find(([name, spec]) => name === upper || spec.aliases?.includes(upper))?.[0];
}

/**
 * Builds the effective configuration from built-in defaults, then each file in order, then the
 * environment. Pure: the caller reads the files and passes the environment. Every problem is
 * collected and thrown together as one ConfigError.
 */
export function loadConfig(
  files: readonly ConfigFile[],
  environment: Readonly<Record<string, string | undefined>>,
  options: { /** The registered API types; API_TYPE must name one. */ apiTypes?: readonly string[] } = {},
): LoadedConfig {
  const problems: ConfigProblem[] = [];
  const raw = new Map<string, RawValue>();
  const rawPrices = new Map<string, RawValue>();
  const rawKey = (section: string, key: string) => `${section}\u0000${key}`;

  for (const [section, specs] of Object.entries(sections)) {
    for (const [key, spec] of Object.entries(specs)) raw.set(rawKey(section, key), { value: spec.default, source: 'DEFAULT', origin: null });
  }

  for (const file of files) {
    let parsed: Record<string, unknown>;
    try {
      parsed = parseIni(file.text) as Record<string, unknown>;
    } catch (error) {
      problems.push({ source: file.path, section: '', key: '', message: `cannot be parsed: ${(error as Error).message}` });
      continue;
    }
    for (const [sectionName, body] of Object.entries(parsed)) {
      if (typeof body !== 'object' || body === null) {
        problems.push({ source: file.path, section: '', key: sectionName, message: 'a key outside any section; put it under a section such as [OpenAI]' });
        continue;
      }
      const section = findSection(sectionName);
      if (section === undefined) {
        const meant = sectionMisspelt(sectionName);
        if (meant !== undefined) problems.push({ source: file.path, section: sectionName, key: '', message: `unknown section; did you mean [${meant}]?` });
        continue;
      }
      for (const [keyName, value] of Object.entries(body as Record<string, unknown>)) {
        const stringValue = typeof value === 'string' ? value : String(value);
        if (section === pricesSection) {
          rawPrices.set(keyName.trim(), { value: stringValue, source: 'FILE', origin: file.path });
          continue;
        }
        const key = findKey(section, keyName);
        if (key === undefined) {
          problems.push({ source: file.path, section, key: keyName, message: unknownKeyMessage(section, keyName) });
          continue;
        }
        raw.set(rawKey(section, key), { value: stringValue, source: 'FILE', origin: file.path });
      }
    }
  }

  for (const [name, value] of Object.entries(environment)) {
    if (value === undefined) continue;
    const conventional = conventionalVariables[name];
    if (conventional) {
      if (value.trim() !== '') raw.set(rawKey(...conventional), { value, source: 'ENVIRONMENT', origin: name });
      continue;
    }
    if (!name.startsWith(environmentPrefix) || environmentNotSettings.has(name)) continue;
    const match = /^CALLBOARD_([A-Z0-9]+)__([A-Z0-9_]+)$/i.exec(name);
    const section = match ? findSection(match[1]!) : undefined;
    if (!match || section === undefined || section === pricesSection) {
      problems.push({ source: name, section: '', key: name, message: `not a setting; the rule is ${environmentVariableFor('<Section>', '<KEY>')}, e.g. CALLBOARD_OPENAI__MODEL` });
      continue;
    }
    const key = findKey(section, match[2]!);
    if (key === undefined) {
      problems.push({ source: name, section, key: match[2]!, message: unknownKeyMessage(section, match[2]!) });
      continue;
    }
    raw.set(rawKey(section, key), { value, source: 'ENVIRONMENT', origin: name });
  }

  const config = { openai: {}, server: {}, database: {}, logging: {}, cache: {}, history: {}, metrics: {}, prompts: {}, limits: {}, prices: {}, secrets: {} } as Record<
    keyof Config,
    Record<string, unknown>
  >;
  const settings: Setting[] = [];
  for (const [section, specs] of Object.entries(sections)) {
    for (const [key, spec] of Object.entries(specs)) {
      const value = raw.get(rawKey(section, key))!;
      const parsed = spec.schema.safeParse(value.value);
      if (parsed.success) {
        config[spec.path[0]][spec.path[1]] = parsed.data;
      } else {
        const message = parsed.error.issues.map((issue) => issue.message).join('; ');
        problems.push({ source: value.origin ?? 'defaults', section, key, message });
      }
      const shown = spec.path[1] === 'url' && value.value ? redactUrlPassword(value.value) : value.value;
      settings.push({ section, key, value: shown, source: value.source, origin: value.origin, secret: false });
    }
  }
  for (const [model, value] of [...rawPrices].sort(([a], [b]) => a.localeCompare(b))) {
    const parsed = price.safeParse(value.value);
    if (parsed.success) config.prices[model] = parsed.data;
    else problems.push({ source: value.origin ?? 'defaults', section: pricesSection, key: model, message: parsed.error.issues.map((issue) => issue.message).join('; ') });
    settings.push({ section: pricesSection, key: model, value: value.value, source: value.source, origin: value.origin, secret: false });
  }
  for (const [field, variable] of Object.entries(secretVariables)) {
    const value = environment[variable]?.trim() || null;
    config.secrets[field] = value;
    settings.push({ section: 'Secrets', key: variable, value: value === null ? null : 'set', source: value === null ? 'DEFAULT' : 'ENVIRONMENT', origin: value === null ? null : variable, secret: true });
  }
  const apiType = config.openai.apiType;
  if (options.apiTypes && typeof apiType === 'string' && !options.apiTypes.includes(apiType)) {
    const origin = raw.get(rawKey('OpenAI', 'API_TYPE'))!.origin ?? 'defaults';
    problems.push({ source: origin, section: 'OpenAI', key: 'API_TYPE', message: `unknown API type "${apiType}"; registered: ${options.apiTypes.join(', ')}` });
  }
  const endpoint = config.secrets.azureOpenaiEndpoint;
  if (typeof endpoint === 'string' && !URL.canParse(endpoint)) {
    problems.push({ source: 'AZURE_OPENAI_ENDPOINT', section: 'Secrets', key: 'AZURE_OPENAI_ENDPOINT', message: 'expected a URL such as https://my-resource.openai.azure.com' });
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return { config: config as unknown as Config, settings };
}

/** A URL with its password masked, fit for logs and answers. */
export function redactUrlPassword(value: string): string {
  if (!URL.canParse(value)) return value;
  const url = new URL(value);
  if (url.password) url.password = '***';
  return url.toString();
}

function unknownKeyMessage(section: string, key: string): string {
  if (/KEY|SECRET|TOKEN|PASSWORD|ENDPOINT/i.test(key)) {
    return `unknown key; secrets come from the environment only (${Object.values(secretVariables).join(', ')})`;
  }
  return `unknown key; known keys in [${section}]: ${Object.keys(sections[section] ?? {}).join(', ')}`;
}

/**
 * Where requests and their credentials go: set in config.ini or the environment only. An override
 * that could change them would let an API caller send the provider's key to a host of its choice.
 */
export const configOnlyKeys: readonly string[] = ['BASE_URL', 'AZURE_API_VERSION', 'AZURE_EMBEDDING_MODEL_API_VERSION'];

/** The settings a runtime override (force_default_value) may change, by TinyTroupe's key name. */
export const overridableKeys: readonly string[] = Object.keys(sections.OpenAI!).filter((key) => !configOnlyKeys.includes(key));

/** Parses one `[OpenAI]` value as the config file would, for runtime overrides. */
export function parseOpenAiValue(key: string, value: string): { ok: true; value: unknown; field: keyof OpenAiConfig } | { ok: false; message: string } {
  const name = findKey('OpenAI', key);
  if (name !== undefined && configOnlyKeys.includes(name)) {
    return { ok: false, message: `${name} decides where requests and the provider's key go: it can be set only in config.ini or the environment` };
  }
  if (name === undefined) return { ok: false, message: `unknown key "${key}"; known keys: ${overridableKeys.join(', ')}` };
  const spec = sections.OpenAI![name]!;
  const parsed = spec.schema.safeParse(value);
  if (!parsed.success) return { ok: false, message: `${name}: ${parsed.error.issues.map((issue) => issue.message).join('; ')}` };
  return { ok: true, value: parsed.data, field: spec.path[1] as keyof OpenAiConfig };
}
