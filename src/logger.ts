import { pino, type Logger } from 'pino';
import type { Config } from './config/config.ts';

export type { Logger };

/** Paths that may hold a secret anywhere in a log object; pino replaces them before writing. */
const redactedPaths = ['apiKey', '*.apiKey', 'authorization', '*.authorization', '*.headers.authorization', '*.headers["api-key"]', 'password', '*.password'];

/** JSON lines on standard output, secrets censored. */
export function createLogger(level: Config['logging']['level'], destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { service: 'callboard' }, redact: { paths: redactedPaths, censor: '[redacted]' } }, destination);
}
