import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.ts';

interface Line {
  level: number;
  time: string;
  msg: string;
  repeated?: number;
  code?: string;
  [field: string]: unknown;
}

/** A logger writing into an array, on a clock the test moves. */
function captured(options: { repeatLimit?: number; repeatWindowMs?: number } = {}) {
  const lines: Line[] = [];
  let clock = 1_000_000;
  const logger = createLogger('info', { write: (text: string) => void lines.push(JSON.parse(text) as Line) }, { ...options, now: () => clock });
  return { logger, lines, advance: (ms: number) => (clock += ms) };
}

describe('the logger', () => {
  it('writes ISO timestamps', () => {
    const { logger, lines } = captured();
    logger.info('hello');
    expect(lines[0]!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(lines[0]!.time) - Date.now())).toBeLessThan(60_000);
  });

  it('censors secrets', () => {
    const { logger, lines } = captured();
    logger.info({ apiKey: 'sk-SECRET', request: { headers: { authorization: 'Bearer sk-SECRET' } } }, 'call');
    expect(JSON.stringify(lines)).not.toContain('sk-SECRET');
  });

  it('writes 5 lines of a repeated error per window, then one line with the count of the rest', () => {
    const { logger, lines, advance } = captured();
    const outage = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    for (let index = 0; index < 3000; index++) {
      logger.error({ err: outage }, 'history write failed; it will be retried');
      advance(3);
    }
    // 9 s of one message: 5 lines written, nothing else yet.
    expect(lines).toHaveLength(5);
    advance(1_000);
    logger.error({ err: outage }, 'history write failed; it will be retried');
    expect(lines).toHaveLength(7);
    expect(lines[5]).toMatchObject({ level: 50, repeated: 2995, code: 'ECONNREFUSED', msg: 'message repeated 2995 times in the last 10s: history write failed; it will be retried' });
    // The next window starts with the line that came after the summary.
    expect(lines[6]).toMatchObject({ level: 50, msg: 'history write failed; it will be retried' });
    expect(lines[6]!.repeated).toBeUndefined();
  });

  it('counts each message and error code apart, and leaves info lines alone', () => {
    const { logger, lines } = captured({ repeatLimit: 2 });
    for (let index = 0; index < 10; index++) {
      logger.warn({ err: Object.assign(new Error('a'), { code: 'A' }) }, 'failed');
      logger.warn({ err: Object.assign(new Error('b'), { code: 'B' }) }, 'failed');
      logger.warn('other');
      logger.info('request');
    }
    const count = (predicate: (line: Line) => boolean) => lines.filter(predicate).length;
    expect(count((line) => line.msg === 'failed' && (line.err as { code: string }).code === 'A')).toBe(2);
    expect(count((line) => line.msg === 'failed' && (line.err as { code: string }).code === 'B')).toBe(2);
    expect(count((line) => line.msg === 'other')).toBe(2);
    expect(count((line) => line.msg === 'request')).toBe(10);
  });

  it('writes the count at flush (shutdown) without waiting for the window to end', () => {
    const { logger, lines } = captured({ repeatLimit: 1 });
    for (let index = 0; index < 4; index++) logger.child({ part: 'history' }).error('database unreachable');
    expect(lines).toHaveLength(1);
    logger.flush();
    expect(lines).toHaveLength(2);
    // Written through the child that logged it: its bindings are kept.
    expect(lines[1]).toMatchObject({ level: 50, part: 'history', repeated: 3, msg: 'message repeated 3 times in the last 10s: database unreachable' });
    logger.flush();
    expect(lines).toHaveLength(2);
  });

  it('writes the count when the window ends even if the message does not come again', async () => {
    const lines: Line[] = [];
    const logger = createLogger('info', { write: (text: string) => void lines.push(JSON.parse(text) as Line) }, { repeatLimit: 1, repeatWindowMs: 20 });
    for (let index = 0; index < 3; index++) logger.error('burst');
    expect(lines).toHaveLength(1);
    await expect.poll(() => lines.length, { timeout: 5_000 }).toBe(2);
    expect(lines[1]).toMatchObject({ repeated: 2 });
  });
});
