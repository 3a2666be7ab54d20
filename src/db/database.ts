import { mkdirSync } from 'node:fs';
import type { PGlite } from '@electric-sql/pglite';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { redactUrlPassword, type Config } from '../config/config.ts';
import { CallboardError } from '../errors.ts';
import { PrismaClient } from './generated/client.ts';

export interface QueryOptions {
  /** The prepared statement's name, one per SQL text. */
  name?: string;
}

/** Plain SQL on one connection, for what Prisma's query builder does not do (migrations, locks). */
export interface SqlSession {
  query<Row = Record<string, unknown>>(sql: string, parameters?: unknown[]): Promise<Row[]>;
  /** Runs a script of several statements. */
  exec(script: string): Promise<void>;
}

export interface Database {
  kind: 'pglite' | 'postgres';
  /** Where the data lives, safe to log: a folder, or the Postgres URL without its password. */
  location: string;
  prisma: PrismaClient;
  /**
   * One statement on any connection, without Prisma's query engine: for the hot paths. A `name`
   * makes it a prepared statement on Postgres (parsed and planned once per connection, not at each
   * run): for fixed statements run on every call, never for SQL built per request.
   */
  query<Row = Record<string, unknown>>(sql: string, parameters?: unknown[], options?: QueryOptions): Promise<Row[]>;
  /**
   * One read for the dashboards (the history, the cache listing, callStats). On Postgres it runs on
   * a small pool of its own with a statement_timeout, so slow dashboard reads wait for each other,
   * never for the connections calls need; past the timeout it fails with QUERY_TIMEOUT. PGlite has
   * one in-process connection and no working statement_timeout: there it is `query`, unbounded.
   */
  analyticsQuery<Row = Record<string, unknown>>(sql: string, parameters?: unknown[]): Promise<Row[]>;
  /** Lends one connection for the duration of `work`. */
  withSession<T>(work: (session: SqlSession) => Promise<T>): Promise<T>;
  /**
   * True when a trivial query answers. It goes through the pool, not Prisma: Prisma compiles its
   * query compiler (WebAssembly, about 45 MB and half a second) on its first query, which /ready
   * and the calls' paths never need.
   */
  isReachable(): Promise<boolean>;
  /** Tells every Callboard instance on this database, this one included (Postgres NOTIFY). */
  notify(channel: string, payload: string): Promise<void>;
  /**
   * Calls `handler` for each notification on the channel until the returned function is called.
   * Notifications sent while a lost connection is re-made are missed: `onLost` says when the
   * connection is lost (from then on until `onReconnect`, notifications may be missed), and
   * `onReconnect` when it is listening again.
   */
  listen(channel: string, handler: (payload: string) => void, onReconnect?: () => void, onLost?: () => void): Promise<() => Promise<void>>;
  /** The connection pools' use now, for GET /metrics; none on PGlite (one in-process connection, no pool). */
  pools(): PoolUse[];
  close(): Promise<void>;
}

/** One pg pool's connections: open ones, idle ones, and requests waiting for one. */
export interface PoolUse {
  pool: 'main' | 'analytics';
  total: number;
  idle: number;
  waiting: number;
}

export interface DatabaseOptions {
  /** A Postgres URL; null opens the embedded PGlite database. */
  url: Config['database']['url'];
  /** PGlite's folder; `memory://` keeps it in memory (tests). */
  dataDir: string;
  /** @default 10 */
  poolSize?: number;
  /** Connections of the analytics pool (Postgres). @default 2 */
  analyticsPoolSize?: number;
  /** Longest an analytics read may run, and wait for a connection (at least 1 s), in milliseconds; 0: no bound. @default 15000 */
  analyticsStatementTimeoutMs?: number;
  /**
   * Tests only: an in-memory PGlite starts from this dump of a data folder (PGlite's `dumpDataDir`,
   * e.g. an already migrated database) instead of an empty one made by initdb (seconds of CPU).
   */
  pgliteDump?: Blob;
}

/** Opens Callboard's database: a Postgres server when a URL is given, else the embedded PGlite. */
export async function createDatabase(options: DatabaseOptions): Promise<Database> {
  return options.url
    ? openPostgres(options.url, { poolSize: options.poolSize ?? 10, analyticsPoolSize: options.analyticsPoolSize ?? 2, analyticsStatementTimeoutMs: options.analyticsStatementTimeoutMs ?? 15_000 })
    : openPglite(options.dataDir, options.pgliteDump);
}

async function openPglite(dataDir: string, dump?: Blob): Promise<Database> {
  const inMemory = dataDir.startsWith('memory://');
  if (!inMemory) mkdirSync(dataDir, { recursive: true });
  // Loaded only here: a server on Postgres never reads PGlite's modules.
  const [{ PGlite }, { PrismaPGlite }] = await Promise.all([import('@electric-sql/pglite'), import('pglite-prisma-adapter')]);
  const client: PGlite = inMemory ? new PGlite(dump ? { loadDataDir: dump } : undefined) : new PGlite(dataDir);
  await client.waitReady;
  const prisma = new PrismaClient({ adapter: new PrismaPGlite(client) });
  const session: SqlSession = {
    query: async <Row,>(sql: string, parameters?: unknown[]) => (await client.query<Row>(sql, parameters)).rows,
    exec: async (script) => {
      await client.exec(script);
    },
  };
  return {
    kind: 'pglite',
    location: inMemory ? 'memory' : dataDir,
    prisma,
    query: session.query,
    analyticsQuery: session.query,
    withSession: (work) => work(session),
    isReachable: () => isReachable(session.query),
    // PGlite's own LISTEN/NOTIFY (one process, one connection): a NOTIFY inside a statement, such as
    // the history's, reaches the listeners when it commits, as on a Postgres server.
    notify: async (channel, payload) => {
      await client.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    listen: async (channel, handler) => {
      const stop = await client.listen(channel, handler);
      return () => stop().catch(() => {});
    },
    pools: () => [],
    close: async () => {
      await prisma.$disconnect();
      await client.close();
    },
  };
}

async function openPostgres(url: string, options: { poolSize: number; analyticsPoolSize: number; analyticsStatementTimeoutMs: number }): Promise<Database> {
  // JIT compilation costs more than it saves on Callboard's queries (up to 0.7 s on callStats).
  // A host that drops packets instead of refusing them must not hang the calls: their cache read fails
  // open and the history spools, after this wait for a connection at the most.
  const pool = new pg.Pool({ connectionString: url, max: options.poolSize, options: '-c jit=off', connectionTimeoutMillis: 5000 });
  const timeoutMs = options.analyticsStatementTimeoutMs;
  const analyticsPool = new pg.Pool({
    connectionString: url,
    max: options.analyticsPoolSize,
    options: `-c jit=off -c statement_timeout=${timeoutMs}`,
    // Waiting for a busy pool is bounded like a statement; opening a connection may take longer than a tiny timeout.
    connectionTimeoutMillis: timeoutMs === 0 ? 0 : Math.max(timeoutMs, 1000),
  });
  // An idle client's network error would otherwise crash the process.
  pool.on('error', () => {});
  analyticsPool.on('error', () => {});
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  const query = async <Row,>(sql: string, parameters?: unknown[], queryOptions?: QueryOptions) =>
    (await (queryOptions?.name ? pool.query({ name: queryOptions.name, text: sql, values: parameters }) : pool.query(sql, parameters))).rows as Row[];
  return {
    kind: 'postgres',
    location: redactUrlPassword(url),
    prisma,
    query,
    analyticsQuery: async <Row,>(sql: string, parameters?: unknown[]) => {
      try {
        return (await analyticsPool.query(sql, parameters)).rows as Row[];
      } catch (error) {
        throw analyticsError(error, timeoutMs);
      }
    },
    withSession: async (work) => {
      const client = await pool.connect();
      try {
        return await work({
          query: async <Row,>(sql: string, parameters?: unknown[]) => (await client.query(sql, parameters)).rows as Row[],
          exec: async (script) => {
            await client.query(script);
          },
        });
      } finally {
        client.release();
      }
    },
    isReachable: () => isReachable(query),
    notify: async (channel, payload) => {
      await pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    listen: async (channel, handler, onReconnect, onLost) => {
      // A connection of its own: LISTEN holds it for as long as the instance runs.
      let client: pg.Client | undefined;
      let stopped = false;
      const connect = async (reconnecting = false): Promise<void> => {
        const next = new pg.Client({ connectionString: url });
        next.on('notification', (message) => {
          if (message.channel === channel) handler(message.payload ?? '');
        });
        next.on('error', () => {
          void next.end().catch(() => {});
          if (client === next) onLost?.();
          reconnectLater();
        });
        await next.connect();
        await next.query(`LISTEN "${channel.replace(/"/g, '')}"`);
        client = next;
        if (reconnecting) onReconnect?.();
      };
      const reconnectLater = () => {
        if (!stopped) setTimeout(() => void connect(true).catch(reconnectLater), 1000).unref();
      };
      await connect();
      return async () => {
        stopped = true;
        await client?.end().catch(() => {});
      };
    },
    pools: () =>
      ([['main', pool], ['analytics', analyticsPool]] as const).map(([name, used]) => ({ pool: name, total: used.totalCount, idle: used.idleCount, waiting: used.waitingCount })),
    close: async () => {
      await prisma.$disconnect();
      await Promise.all([pool.end(), analyticsPool.end()]);
    },
  };
}

async function isReachable(query: Database['query']): Promise<boolean> {
  try {
    await query('SELECT 1');
    return true;
  } catch {
    return false;
  }
}

/** Postgres cancelled the statement (57014), or every analytics connection stayed busy: QUERY_TIMEOUT. */
function analyticsError(error: unknown, timeoutMs: number): unknown {
  const canceled = (error as { code?: unknown }).code === '57014';
  const noConnection = error instanceof Error && /timeout exceeded when trying to connect|due to connection timeout/i.test(error.message);
  if (!canceled && !noConnection) return error;
  const message = canceled
    ? `The query ran longer than ${timeoutMs} ms and was stopped ([Limits] ANALYTICS_STATEMENT_TIMEOUT_MS). Narrow the filter or the time range.`
    : `No analytics connection came free in time ([Limits] ANALYTICS_STATEMENT_TIMEOUT_MS is ${timeoutMs} ms); try again later.`;
  return new CallboardError('QUERY_TIMEOUT', message, { details: { timeoutMs }, cause: error });
}
