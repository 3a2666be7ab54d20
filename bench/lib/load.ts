import autocannon from 'autocannon';

/** One kind of request the bench sends over and over. */
export interface LoadTarget {
  /** Full URL, e.g. http://127.0.0.1:4000/graphql. */
  url: string;
  headers: Record<string, string>;
  /** One body for every request, or a new one per request (then every request differs). */
  body: string | (() => string);
  /** False when a 200 response is still wrong (GraphQL errors, an unexpected cache status). */
  verify?: (body: string) => boolean;
}

export interface LoadResult {
  connections: number;
  /** Wall time of the run in seconds. */
  seconds: number;
  /** Responses received, whatever their status. */
  responses: number;
  requestsPerSecond: number;
  /** Latencies of 200 responses, in milliseconds, at sub-millisecond precision. */
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Connection errors, timeouts, non-2xx statuses and bodies `verify` refused. */
  failures: number;
  /** The first refused body, to say what went wrong. */
  firstFailure: string | null;
}

/** Nearest-rank percentile of ascending values. */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1));
  return sorted[index]!;
}

/**
 * Runs autocannon against the target for `seconds` (or until it has sent `amount` requests) with
 * `connections` keep-alive connections.
 * Latencies come from autocannon's per-response event (hrtime, fractional milliseconds) rather
 * than its histogram, which rounds to whole milliseconds.
 */
export function runLoad(target: LoadTarget, options: { connections: number } & ({ seconds: number } | { amount: number })): Promise<LoadResult> {
  const latencies: number[] = [];
  let firstFailure: string | null = null;
  const { body } = target;
  const verify = target.verify;
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: target.url,
        connections: options.connections,
        ...('amount' in options ? { amount: options.amount } : { duration: options.seconds }),
        method: 'POST',
        headers: target.headers,
        ...(typeof body === 'string'
          ? { body }
          : { requests: [{ method: 'POST', setupRequest: (request) => ({ ...request, body: body() }) }] }),
        ...(verify
          ? {
              verifyBody: (responseBody: string | Buffer | undefined) => {
                const text = String(responseBody ?? '');
                if (verify(text)) return true;
                firstFailure ??= text.slice(0, 500);
                return false;
              },
            }
          : {}),
        timeout: 30,
      },
      (error: unknown, result: autocannon.Result) => {
        if (error) return reject(error instanceof Error ? error : new Error(String(error)));
        const seconds = (performance.now() - started) / 1000;
        const sorted = Float64Array.from(latencies).sort();
        const responses = result['1xx'] + result['2xx'] + result['3xx'] + result['4xx'] + result['5xx'];
        resolve({
          connections: options.connections,
          seconds,
          responses,
          requestsPerSecond: responses / seconds,
          p50Ms: percentile(sorted, 0.5),
          p99Ms: percentile(sorted, 0.99),
          meanMs: sorted.length === 0 ? Number.NaN : sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
          failures: result.errors + result.timeouts + result.non2xx + result.mismatches,
          firstFailure,
        });
      },
    );
    instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
      if (statusCode === 200) latencies.push(responseTime);
    });
  });
}
