import type { Logger } from './logger.ts';

/** Background work that runs every so often, one run at a time, never on a caller's path. */
export interface PeriodicJob<T> {
  /** Runs now (after the run in progress, if any); null when the run failed (it was logged). */
  run(): Promise<T | null>;
  /** Stops the timer, tells the run in progress to stop (`stopping()`), and waits for it. */
  stop(): Promise<void>;
}

export interface PeriodicJobOptions<T> {
  /** What the job does, for its log lines ("call rollup"). */
  what: string;
  logger: Pick<Logger, 'info' | 'warn'>;
  /** Milliseconds between the end of a run and the next; 0 turns the timer off (run() still works). */
  intervalMs: number;
  /** Milliseconds to the first run. */
  firstRunMs: number;
  /** One run; `stopping()` turns true once stop() is called, for a long run to end early. */
  work: (stopping: () => boolean) => Promise<T>;
}

/**
 * Runs `work` every `intervalMs`. A failure (the database may be down) is logged once, not at every
 * run, and the next run catches up; the first run that works again says so.
 */
export function startPeriodicJob<T>(options: PeriodicJobOptions<T>): PeriodicJob<T> {
  const { what, logger, intervalMs } = options;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<T | null> | undefined;
  let stopped = intervalMs <= 0;
  let stopping = false;
  let failing = false;
  const once = async (): Promise<T | null> => {
    try {
      const result = await options.work(() => stopping);
      if (failing) logger.info(`${what} working again`);
      failing = false;
      return result;
    } catch (error) {
      if (!failing) logger.warn({ err: error }, `${what} failed; it will be tried again`);
      failing = true;
      return null;
    }
  };
  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      timer = undefined;
      void job.run().finally(() => schedule(intervalMs));
    }, delayMs);
    timer.unref();
  };
  const job: PeriodicJob<T> = {
    async run() {
      while (running) await running;
      running = once().finally(() => {
        running = undefined;
      });
      return running;
    },
    async stop() {
      stopped = true;
      stopping = true;
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
  schedule(options.firstRunMs);
  return job;
}
