import type { Measurement } from './measure.ts';
import { peerTitles, portkeyVersion, type PeerName } from './peers.ts';

export interface PeerRow {
  peer: PeerName;
  connections: number;
  measurement: Measurement;
}

const fixed = (value: number | null | undefined, digits: number) => (value === null || value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits));
const ratio = (value: number | null | undefined, base: number | null | undefined) =>
  value === null || value === undefined || base === null || base === undefined || !Number.isFinite(value / base) || base <= 0 ? '–' : `${(value / base).toFixed(1)}×`;

/**
 * The comparison section of bench/results.md: Callboard's cache miss (GraphQL and REST) beside
 * Portkey and the bare hop, each as a row, then Callboard's figures as ratios to each peer.
 */
export function renderPeerComparison(input: {
  connections: number[];
  /** Callboard's GraphQL cache miss (the `miss` scenario) at a connection count, when it ran. */
  graphqlMiss: (connections: number) => Measurement | undefined;
  /** The upstream called directly at a connection count, when it ran: the p50 floor. */
  direct: (connections: number) => Measurement | undefined;
  rows: PeerRow[];
  notes: string[];
  pinning: string;
}): string[] {
  if (input.rows.length === 0 && input.notes.length === 0) return [];
  const lines: string[] = ['## Callboard beside Portkey and a bare hop', ''];
  lines.push(
    `Every gateway forwards the same chat completion (a new question per request, so Callboard's cache misses) to the same fake upstream; ` +
      `"server CPU" is the gateway's own process from /proc, "added p50" its p50 over the upstream called directly at the same connection count. ` +
      `Callboard also writes a cache entry and a history row per call (its Postgres CPU is shown apart); Portkey ${portkeyVersion} runs with no cache ` +
      `and no log store (\`x-portkey-provider: openai\`, \`x-portkey-custom-host\`); the hop (bench/hop.ts) only reads the body, forwards it with fetch and pipes the answer back. ${input.pinning}`,
    '',
  );
  for (const note of input.notes) lines.push(`- ${note}`);
  if (input.notes.length > 0) lines.push('');

  interface Entry {
    title: string;
    measurement: Measurement;
  }
  const entriesAt = (connections: number): Entry[] => {
    const entries: Entry[] = [];
    const graphql = input.graphqlMiss(connections);
    if (graphql) entries.push({ title: 'Callboard GraphQL sendMessage, cache miss', measurement: graphql });
    for (const row of input.rows) if (row.connections === connections) entries.push({ title: peerTitles[row.peer], measurement: row.measurement });
    return entries;
  };
  const addedP50 = (measurement: Measurement, connections: number) => {
    const direct = input.direct(connections);
    return direct ? measurement.load.p50Ms - direct.load.p50Ms : Number.NaN;
  };

  lines.push(
    '| Gateway | Connections | req/s | p50 ms | added p50 ms | p99 ms | server CPU ms/req | Postgres CPU ms/req | upstream CPU ms/req | failed |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const connections of input.connections) {
    for (const { title, measurement } of entriesAt(connections)) {
      const { load } = measurement;
      lines.push(
        `| ${title} | ${connections} | ${load.requestsPerSecond.toFixed(0)} | ${fixed(load.p50Ms, 2)} | ${fixed(addedP50(measurement, connections), 2)} | ${fixed(load.p99Ms, 2)} | ` +
          `${fixed(measurement.serverCpuMs, 3)} | ${fixed(measurement.databaseCpuMs, 3)} | ${fixed(measurement.upstreamCpuMs, 3)} | ${load.failures} |`,
      );
    }
  }
  lines.push('');

  const peerAt = (peer: PeerName, connections: number) => input.rows.find((row) => row.peer === peer && row.connections === connections)?.measurement;
  const ratioLines: string[] = [];
  for (const connections of input.connections) {
    const callboard: [string, Measurement | undefined][] = [
      ['GraphQL', input.graphqlMiss(connections)],
      ['REST', peerAt('rest', connections)],
    ];
    for (const [door, mine] of callboard) {
      if (!mine) continue;
      for (const peer of ['portkey', 'hop'] as const) {
        const theirs = peerAt(peer, connections);
        if (!theirs) continue;
        ratioLines.push(
          `| Callboard ${door} ÷ ${peerTitles[peer]} | ${connections} | ${ratio(mine.serverCpuMs, theirs.serverCpuMs)} | ${ratio(mine.load.requestsPerSecond, theirs.load.requestsPerSecond)} | ` +
            `${ratio(addedP50(mine, connections), addedP50(theirs, connections))} |`,
        );
      }
    }
  }
  if (ratioLines.length > 0) {
    lines.push(
      '| Ratio | Connections | server CPU per request | req/s | added p50 |',
      '|---|--:|--:|--:|--:|',
      ...ratioLines,
      '',
      'Above 1× for CPU and added p50, Callboard costs more than the peer; below 1× for req/s, it serves fewer.',
      '',
    );
  }
  return lines;
}
