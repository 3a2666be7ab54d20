import pg from 'pg';
import { databaseUrlFor, withClient } from '../../test/support/database.ts';

const quoted = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** Drops `database` if a previous run left it behind, creates it empty, and returns its URL. */
export async function createBenchDatabase(adminUrl: string, database: string): Promise<string> {
  await withClient(adminUrl, async (client) => {
    await client.query(`DROP DATABASE IF EXISTS ${quoted(database)} WITH (FORCE)`);
    await client.query(`CREATE DATABASE ${quoted(database)}`);
  });
  return databaseUrlFor(adminUrl, database);
}

export async function dropBenchDatabase(adminUrl: string, database: string): Promise<void> {
  await withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${quoted(database)} WITH (FORCE)`));
}

/** Process ids of the server backends connected to `database` (Callboard's pool). */
export async function backendPids(adminClient: pg.Client, database: string): Promise<number[]> {
  const result = await adminClient.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
    [database],
  );
  return result.rows.map((row) => row.pid);
}

export async function openClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

/**
 * The history seed: `rows` calls over the last 30 days across 8 models (7 chat, 1 embedding) with
 * skewed shares, 30% cache hits, 5% errors (never on a hit), 0 to 2 of 10 tags, 30% templated,
 * latencies, tokens and costs at the configured prices, and request and response bodies sized by
 * their tokens as STORE_BODIES (the default) keeps them. The generated columns are named as the
 * history's columns; `seedStatement` inserts each into whichever table has it (bodies live in
 * LlmCall or in LlmCallBody, depending on the schema).
 */
const generatedCalls = `
WITH models(slot, model, kind, input_price, output_price, share) AS (
  VALUES (1, 'gpt-4o-mini', 'CHAT', 0.15, 0.60, 0.30),
         (2, 'gpt-4o', 'CHAT', 2.50, 10.00, 0.15),
         (3, 'gpt-4.1-mini', 'CHAT', 0.40, 1.60, 0.12),
         (4, 'gpt-4.1', 'CHAT', 2.00, 8.00, 0.10),
         (5, 'o4-mini', 'CHAT', 1.10, 4.40, 0.08),
         (6, 'gpt-4.1-nano', 'CHAT', 0.10, 0.40, 0.05),
         (7, 'o3-mini', 'CHAT', 1.10, 4.40, 0.05),
         (8, 'text-embedding-3-small', 'EMBEDDING', 0.02, 0.0, 0.15)
),
bounds AS (
  SELECT slot, model, kind, input_price, output_price,
         sum(share) OVER (ORDER BY slot) - share AS low, sum(share) OVER (ORDER BY slot) AS high
  FROM models
),
draws AS (
  SELECT i, random() AS u_model, random() AS u_cache, random() AS u_error, random() AS u_latency,
         random() AS u_tokens, random() AS u_tags, random() AS u_template,
         now() - random() * interval '30 days' AS created
  FROM generate_series($1::int, $2::int) AS i
),
shaped AS (
  SELECT d.*, b.model, b.kind, b.input_price, b.output_price,
         CASE WHEN d.u_cache < 0.30 THEN 'HIT' WHEN d.u_cache < 0.88 THEN 'MISS' WHEN d.u_cache < 0.96 THEN 'BYPASS' ELSE 'REFRESH' END AS cache_status,
         -- Errors only on calls that reached the provider: 5% overall.
         d.u_cache >= 0.30 AND d.u_error < 0.0714 AS failed,
         CASE WHEN b.kind = 'CHAT' THEN 50 + floor(3000 * d.u_tokens ^ 2)::int ELSE 5 + floor(500 * d.u_tokens)::int END AS prompt_tokens,
         CASE WHEN b.kind = 'CHAT' THEN 20 + floor(800 * d.u_latency)::int ELSE 0 END AS completion_tokens
  FROM draws d JOIN bounds b ON d.u_model >= b.low AND d.u_model < b.high
),
final AS (
  SELECT s.*,
         CASE WHEN s.failed THEN NULL ELSE s.prompt_tokens END AS p,
         CASE WHEN s.failed THEN NULL ELSE s.completion_tokens END AS c,
         (ARRAY['team:search', 'team:support', 'team:growth', 'team:data', 'env:prod', 'env:staging', 'feature:summaries', 'feature:chat', 'feature:agents', 'batch'])
           [1 + s.i % 10] AS tag_one,
         (ARRAY['team:search', 'team:support', 'team:growth', 'team:data', 'env:prod', 'env:staging', 'feature:summaries', 'feature:chat', 'feature:agents', 'batch'])
           [1 + (s.i % 10 + 1 + (s.i / 10) % 9) % 10] AS tag_two
  FROM shaped s
),
generated AS MATERIALIZED (
SELECT gen_random_uuid() AS "id",
  f.created AS "createdAt",
  f.kind::"CallKind" AS "kind",
  CASE WHEN f.i % 7 = 0 THEN 'azure' ELSE 'openai' END AS "apiType",
  f.model AS "model",
  (CASE WHEN f.failed THEN 'ERROR' ELSE 'SUCCESS' END)::"CallStatus" AS "status",
  f.cache_status::"CacheStatus" AS "cacheStatus",
  CASE WHEN f.cache_status = 'BYPASS' THEN NULL ELSE encode(sha256(convert_to((f.i % 300000)::text, 'UTF8')), 'hex') END AS "cacheKey",
  CASE WHEN f.failed THEN (ARRAY['PROVIDER_RATE_LIMITED', 'PROVIDER_TIMEOUT', 'RETRY_EXHAUSTED', 'PROVIDER_UNAVAILABLE'])[1 + f.i % 4] END AS "errorCode",
  CASE WHEN f.failed THEN 'The provider did not answer in time.' END AS "errorMessage",
  CASE WHEN f.cache_status = 'HIT' THEN 0 WHEN f.failed THEN 1 + f.i % 5 WHEN f.u_error > 0.97 THEN 2 ELSE 1 END AS "attemptCount",
  CASE WHEN f.cache_status = 'HIT' THEN 0.2 + 1.5 * f.u_latency
       WHEN f.failed THEN 1000 + 59000 * f.u_latency
       WHEN f.kind = 'EMBEDDING' THEN 40 + 400 * f.u_latency ^ 2
       ELSE 250 + 6000 * f.u_latency ^ 3 END AS "latencyMs",
  f.p AS "promptTokens",
  f.c AS "completionTokens",
  f.p + f.c AS "totalTokens",
  f.prompt_tokens + (f.i % 5) - 2 AS "estimatedPromptTokens",
  -- A hit spent nothing and saved what its answer cost (exact numerics, as the gateway writes them).
  CASE WHEN f.failed THEN NULL WHEN f.cache_status = 'HIT' THEN 0 ELSE round(((f.prompt_tokens * f.input_price + f.completion_tokens * f.output_price) / 1e6)::numeric, 12) END AS "costUsd",
  CASE WHEN f.cache_status = 'HIT' AND NOT f.failed THEN round(((f.prompt_tokens * f.input_price + f.completion_tokens * f.output_price) / 1e6)::numeric, 12) END AS "costSavedUsd",
  CASE WHEN f.u_template < 0.20 THEN 'generative_agent.system.mustache' WHEN f.u_template < 0.30 THEN 'summarize.user.mustache' END AS "templateName",
  CASE WHEN f.u_template < 0.20 THEN 'a3f1c2d4e5b6a7980a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071'
       WHEN f.u_template < 0.30 THEN '0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0' END AS "templateHash",
  CASE WHEN f.u_tags < 0.20 THEN ARRAY[]::text[] WHEN f.u_tags < 0.70 THEN ARRAY[f.tag_one] ELSE ARRAY[f.tag_one, f.tag_two] END AS "tags",
  CASE WHEN f.i % 10 = 0 THEN jsonb_build_object('user', 'user-' || (f.i % 500), 'session', f.i / 20) END AS "metadata",
  CASE WHEN f.kind = 'EMBEDDING' THEN jsonb_build_object('model', f.model, 'input', jsonb_build_array(left(repeat('record ' || f.i || ' of the catalogue, ', 40), 4 * f.prompt_tokens)))
       ELSE jsonb_build_object('model', f.model, 'temperature', 1.5, 'max_tokens', 4000, 'frequency_penalty', 0, 'presence_penalty', 0,
         'messages', jsonb_build_array(
           jsonb_build_object('role', 'system', 'content', 'You are a helpful assistant that answers briefly and cites its sources.'),
           jsonb_build_object('role', 'user', 'content', left(repeat('Question ' || f.i || ' about the quarterly report and its figures. ', 60), least(1500, 4 * f.prompt_tokens))))) END AS "requestBody",
  CASE WHEN f.failed THEN NULL
       WHEN f.kind = 'EMBEDDING' THEN jsonb_build_object('model', f.model, 'dimensions', 1536, 'count', 1)
       ELSE jsonb_build_object('id', 'chatcmpl-' || md5(f.i::text), 'model', f.model, 'created', extract(epoch FROM f.created)::bigint,
         'choices', jsonb_build_array(jsonb_build_object('index', 0, 'finish_reason', 'stop',
           'message', jsonb_build_object('role', 'assistant', 'content', left(repeat('The figures for item ' || f.i || ' rose slightly. ', 30), least(800, 4 * f.completion_tokens))))),
         'usage', jsonb_build_object('prompt_tokens', f.p, 'completion_tokens', f.c, 'total_tokens', f.p + f.c)) END AS "responseBody"
FROM final f
)`;

const generatedColumns = ['id', 'createdAt', 'kind', 'apiType', 'model', 'status', 'cacheStatus', 'cacheKey', 'errorCode', 'errorMessage', 'attemptCount', 'latencyMs', 'promptTokens', 'completionTokens', 'totalTokens', 'estimatedPromptTokens', 'costUsd', 'costSavedUsd', 'templateName', 'templateHash', 'tags', 'metadata', 'requestBody', 'responseBody'];

/** The INSERT of the seed for the tables and columns this database has (a data-modifying CTE per extra table). */
function seedStatement(tables: Map<string, Set<string>>): string {
  const targets = [...tables.entries()]
    .map(([table, columns]) => {
      // A side table of the calls keys its rows by "callId".
      const pairs = [...columns].flatMap((column) =>
        generatedColumns.includes(column) ? [[column, column]] : column === 'callId' ? [['callId', 'id']] : [],
      );
      return { table, pairs };
    })
    .filter((target) => target.pairs.length > 0);
  const inserts = targets.map(
    ({ table, pairs }) =>
      `INSERT INTO ${quoted(table)} (${pairs.map(([column]) => quoted(column!)).join(', ')}) SELECT ${pairs.map(([, source]) => quoted(source!)).join(', ')} FROM generated`,
  );
  const last = inserts.pop()!;
  return `${generatedCalls}${inserts.map((insert, index) => `,\nwritten_${index} AS (${insert})`).join('')}\n${last}`;
}

export interface SeedReport {
  rows: number;
  seconds: number;
  /** LlmCall's heap (what callStats scans). */
  tableBytes: number;
  /** Every seeded table with its indexes and TOAST. */
  totalBytes: number;
  /** The tables that got rows, e.g. LlmCall and LlmCallBody. */
  tables: string[];
}

const historyTables = ['LlmCall', 'LlmCallBody'];

/**
 * Replaces the call history with `rows` generated rows, inserted by `parallel` connections at once.
 * Secondary indexes are dropped for the insert and built again after (faster than maintaining
 * them row by row) and foreign keys are not checked meanwhile (session_replication_role); then
 * VACUUM ANALYZE leaves the tables as autovacuum would: statistics and visibility map up to date.
 */
export async function seedHistory(url: string, rows: number, parallel = 2): Promise<SeedReport> {
  const started = performance.now();
  const clients = await Promise.all(Array.from({ length: parallel }, () => openClient(url)));
  try {
    for (const client of clients) {
      await client.query(`SET maintenance_work_mem = '256MB'`);
      await client.query(`SET synchronous_commit = off`);
      await client.query(`SET session_replication_role = replica`);
    }
    const [first] = clients as [pg.Client];
    const columns = await first.query<{ table_name: string; column_name: string }>(
      `SELECT table_name, column_name FROM information_schema.columns
       WHERE table_schema = current_schema() AND table_name = ANY($1::text[]) ORDER BY table_name = 'LlmCall' DESC, ordinal_position`,
      [historyTables],
    );
    const tables = new Map<string, Set<string>>();
    for (const row of columns.rows) tables.set(row.table_name, (tables.get(row.table_name) ?? new Set()).add(row.column_name));
    if (!tables.has('LlmCall')) throw new Error('the database has no "LlmCall" table: is it migrated?');
    const statement = seedStatement(tables);

    await first.query(`TRUNCATE "LlmCall" CASCADE`);
    const indexes = await first.query<{ name: string; definition: string }>(
      `SELECT i.indexname AS name, i.indexdef AS definition
       FROM pg_indexes i
       WHERE i.schemaname = current_schema() AND i.tablename = ANY($1::text[])
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)`,
      [[...tables.keys()]],
    );
    for (const index of indexes.rows) await first.query(`DROP INDEX ${quoted(index.name)}`);
    const share = Math.ceil(rows / parallel);
    await Promise.all(
      clients.map((client, slot) => {
        const from = slot * share + 1;
        const to = Math.min(rows, (slot + 1) * share);
        return from <= to ? client.query(statement, [from, to]) : Promise.resolve();
      }),
    );
    // Index builds spread over the connections too.
    const queue = [...indexes.rows];
    await Promise.all(
      clients.map(async (client) => {
        for (let index = queue.shift(); index; index = queue.shift()) await client.query(index.definition);
      }),
    );
    for (const table of tables.keys()) await first.query(`VACUUM (ANALYZE) ${quoted(table)}`);
    const sizes = await first.query<{ table_bytes: string; total_bytes: string; rows: string }>(
      `SELECT pg_table_size('"LlmCall"') AS table_bytes,
              (SELECT sum(pg_total_relation_size(quote_ident(name))) FROM unnest($1::text[]) AS name) AS total_bytes,
              (SELECT count(*) FROM "LlmCall") AS rows`,
      [[...tables.keys()]],
    );
    const size = sizes.rows[0]!;
    return {
      rows: Number(size.rows),
      seconds: (performance.now() - started) / 1000,
      tableBytes: Number(size.table_bytes),
      totalBytes: Number(size.total_bytes),
      tables: [...tables.keys()],
    };
  } finally {
    await Promise.all(clients.map((client) => client.end()));
  }
}
