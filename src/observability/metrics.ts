import { Registry } from 'prom-client';

/**
 * The process's Prometheus registry: every part of Callboard registers its own metrics on it (with
 * `registers: [metrics.registry]`), and `GET /metrics` reads it. One per process (per Services), never
 * prom-client's global one, so tests that build several apps in one process do not share counters.
 */
export interface Metrics {
  registry: Registry;
}

export function createMetrics(): Metrics {
  return { registry: new Registry() };
}
