import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import { startTracing, tracesUrlOf, tracingModulesLoaded } from '../../src/observability/tracing.ts';

const sourceRoot = fileURLToPath(new URL('../../src', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'generated' ? [] : sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

describe('tracing, off', () => {
  it('is off and loads no OpenTelemetry module when no OTLP endpoint is set', async () => {
    expect(await startTracing({ OTEL_SERVICE_NAME: 'x' }, createLogger('silent'))).toBeNull();
    expect(await startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_SDK_DISABLED: 'true' }, createLogger('silent'))).toBeNull();
    expect(tracingModulesLoaded()).toBe(false);
  });

  it('imports OpenTelemetry only dynamically (or its types), so that nothing of it loads while tracing is off', () => {
    const offenders = sourceFiles(sourceRoot).flatMap((path) =>
      readFileSync(path, 'utf8')
        .split('\n')
        .filter((line) => /^\s*import\s/.test(line) && line.includes('@opentelemetry/') && !/^\s*import\s+type\s/.test(line))
        .map((line) => `${path}: ${line.trim()}`),
    );
    expect(offenders).toEqual([]);
  });

  it('reads the standard variables for the traces URL', () => {
    expect(tracesUrlOf({})).toBeNull();
    expect(tracesUrlOf({ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' })).toBeNull();
    expect(tracesUrlOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' })).toBe('http://collector:4318/v1/traces');
    expect(tracesUrlOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://other:4318/traces' })).toBe('http://other:4318/traces');
  });
});
