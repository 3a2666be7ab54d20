import { pino, type Logger } from 'pino';
import type { Config } from './config/config.ts';

export type { Logger };

/** Paths that may hold a secret anywhere in a log object; pino replaces them before writing. */
const redactedPaths = ['apiKey', '*.apiKey', 'authorization', '*.authorization', '*.headers.authorization', '*.headers["api-key"]', 'password', '*.password'];

/** pino's numeric level of `warn`: this level and above are rate-limited. */
const warnLevel = 40;

export interface LoggerOptions {
  /** Lines of one warn/error message (and error code) written per window; more are counted, not written. @default 5 */
  repeatLimit?: number;
  /** @default 10000 */
  repeatWindowMs?: number;
  /** Injected by tests. @default Date.now */
  now?: () => number;
}

/**
 * JSON lines on standard output, ISO timestamps, secrets censored. Warn and error lines are rate-limited: past
 * `repeatLimit` lines of the same message (and error code) within `repeatWindowMs`, they are counted instead of
 * written, and one line says how many were left out ("message repeated N times in the last 10s", with
 * `repeated: N`) when the window ends, when the message comes again after it, or at `logger.flush()`.
 */
export function createLogger(level: Config['logging']['level'], destination?: pino.DestinationStream, options: LoggerOptions = {}): Logger {
  const repeats = createRepeatLimiter(options);
  const logger = pino(
    {
      level,
      base: { service: 'callboard' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactedPaths, censor: '[redacted]' },
      hooks: {
        logMethod(args, method, levelValue) {
          if (levelValue < warnLevel || repeats.admit(args, method, this, levelValue)) method.apply(this, args);
        },
      },
    },
    destination,
  );
  const flush = logger.flush.bind(logger);
  // Child loggers inherit this (pino's children are made with Object.create of their parent).
  logger.flush = (callback?: (error?: Error) => void) => {
    repeats.flush();
    flush(callback);
  };
  return logger;
}

type LogMethod = (this: Logger, ...args: unknown[]) => void;

interface Repeated {
  windowStart: number;
  written: number;
  suppressed: number;
  message: string;
  code: string | null;
  /** Where the summary is written: the raw method of the level (past the hook) and the (child) logger of the last suppressed line. */
  method: LogMethod | null;
  logger: Logger | null;
}

/** The most messages tracked at once; past it (a flood of distinct messages), new ones are written untracked. */
const maxTrackedMessages = 1000;
const maxKeyCharacters = 300;

function createRepeatLimiter(options: LoggerOptions) {
  const limit = options.repeatLimit ?? 5;
  const windowMs = options.repeatWindowMs ?? 10_000;
  const now = options.now ?? Date.now;
  const windowText = `${Math.round(windowMs / 100) / 10}s`;
  const tracked = new Map<string, Repeated>();
  let timer: NodeJS.Timeout | null = null;

  const summarize = (entry: Repeated) => {
    if (entry.suppressed === 0 || !entry.method || !entry.logger) return;
    const count = entry.suppressed;
    entry.suppressed = 0;
    entry.method.call(entry.logger, { repeated: count, ...(entry.code ? { code: entry.code } : {}) }, `message repeated ${count} times in the last ${windowText}: ${entry.message}`);
  };

  /** Summarizes and forgets every message whose window has ended. */
  const sweep = (at: number) => {
    for (const [key, entry] of tracked) {
      if (at - entry.windowStart >= windowMs) {
        summarize(entry);
        tracked.delete(key);
      }
    }
  };

  const schedule = (delayMs: number) => {
    if (timer) return;
    timer = setTimeout(
      () => {
        timer = null;
        const at = now();
        sweep(at);
        let next = Number.POSITIVE_INFINITY;
        for (const entry of tracked.values()) if (entry.suppressed > 0) next = Math.min(next, entry.windowStart + windowMs - at);
        if (next !== Number.POSITIVE_INFINITY) schedule(next);
      },
      Math.max(0, delayMs) + 1,
    );
    timer.unref();
  };

  return {
    /** True when the line is to be written. */
    admit(args: unknown[], method: LogMethod, logger: Logger, level: number): boolean {
      const { message, code } = describe(args);
      const key = `${level}\u0000${code ?? ''}\u0000${message}`;
      const at = now();
      let entry = tracked.get(key);
      if (entry && at - entry.windowStart >= windowMs) {
        summarize(entry);
        tracked.delete(key);
        entry = undefined;
      }
      if (!entry) {
        if (tracked.size >= maxTrackedMessages) sweep(at);
        if (tracked.size < maxTrackedMessages) tracked.set(key, { windowStart: at, written: 1, suppressed: 0, message, code, method: null, logger: null });
        return true;
      }
      if (entry.written < limit) {
        entry.written++;
        return true;
      }
      entry.suppressed++;
      entry.method = method;
      entry.logger = logger;
      schedule(entry.windowStart + windowMs - at);
      return false;
    },
    /** Writes the count of every message left out so far (at shutdown). */
    flush() {
      for (const entry of tracked.values()) summarize(entry);
    },
  };
}

/** A line's message and error code, as pino's call arguments give them: `(object, message)`, `(error)` or `(message)`. */
function describe(args: unknown[]): { message: string; code: string | null } {
  const [first, second] = args;
  if (first === null || typeof first !== 'object') return { message: String(first).slice(0, maxKeyCharacters), code: null };
  const object = first as { err?: unknown; code?: unknown; message?: unknown };
  const error = (first instanceof Error ? first : object.err) as { code?: unknown; message?: unknown } | undefined;
  const code = error && typeof error === 'object' && error.code !== undefined ? error.code : object.code;
  const message = typeof second === 'string' ? second : first instanceof Error ? first.message : '';
  return { message: message.slice(0, maxKeyCharacters), code: code === undefined || code === null ? null : String(code).slice(0, 100) };
}
