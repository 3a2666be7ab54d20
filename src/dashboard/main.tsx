// Callboard's dashboard: a static page (served at /dashboard) that reads /graphql with the typed
// operations of src/client/operations.graphql, as the API key signed in may.
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { Provider, useQuery, useSubscription } from '@urql/preact';
import { render } from 'preact';
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import {
  DashboardCallDocument,
  DashboardCallEventsDocument,
  DashboardCallsDocument,
  DashboardStatsDocument,
  type CallStatsDimension,
  type DashboardCallRowFragment,
  type DashboardStatsQuery,
} from '../client/generated/graphql.ts';
import { Chart, type ChartSeries } from './chart.tsx';
import { createDashboardClient, errorOf, keyStorageName } from './client.ts';
import { formatClock, formatCount, formatDay, formatMoney, formatMs, formatRate, formatTime, moneyValue, sumMoney } from './format.ts';

const ranges = [
  { id: '24h', label: 'Last 24 hours', hours: 24, step: 'HOUR' },
  { id: '7d', label: 'Last 7 days', hours: 24 * 7, step: 'HOUR' },
  { id: '30d', label: 'Last 30 days', hours: 24 * 30, step: 'DAY' },
] as const;
type Range = (typeof ranges)[number];

/** Rows the recent-calls table keeps, live ones included. */
const tableRows = 25;

function readStoredKey(): string {
  try {
    return sessionStorage.getItem(keyStorageName) ?? '';
  } catch {
    return '';
  }
}

function App() {
  const [key, setKey] = useState(readStoredKey);
  const connection = useMemo(() => createDashboardClient(key), [key]);
  useEffect(() => () => connection.dispose(), [connection]);
  const signIn = (next: string) => {
    sessionStorage.setItem(keyStorageName, next);
    setKey(next);
  };
  const signOut = () => {
    sessionStorage.removeItem(keyStorageName);
    setKey('');
  };
  return (
    <Provider value={connection.client}>
      <Dashboard key={key} apiKey={key} onSignIn={signIn} onSignOut={signOut} onLive={connection.onLive} />
    </Provider>
  );
}

interface DashboardProps {
  apiKey: string;
  onSignIn(key: string): void;
  onSignOut(): void;
  onLive(listener: (live: boolean) => void): () => void;
}

function Dashboard({ apiKey, onSignIn, onSignOut, onLive }: DashboardProps) {
  const [range, setRange] = useState<Range>(ranges[0]);
  // The window is fixed when the range is chosen (and moved on by live events), so that refetches
  // ask for the same calls.
  const [now, setNow] = useState(() => Date.now());
  const from = useMemo(() => new Date(now - range.hours * 3_600_000).toISOString(), [now, range]);
  const filter = useMemo(() => ({ from }), [from]);
  const overTime = useMemo<CallStatsDimension[]>(() => [range.step], [range]);
  const [stats, refetchStats] = useQuery({ query: DashboardStatsDocument, variables: { filter, overTime } });
  const [calls, refetchCalls] = useQuery({ query: DashboardCallsDocument, variables: { first: tableRows, filter } });
  const [live, setLive] = useState<DashboardCallRowFragment[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [streaming, setStreaming] = useState(false);
  useEffect(() => onLive(setStreaming), [onLive]);

  // Live events come faster than the totals need: one refetch per half second at most.
  const refresh = useRef<ReturnType<typeof setTimeout> | null>(null);
  const scheduleRefresh = useCallback(() => {
    if (refresh.current) return;
    refresh.current = setTimeout(() => {
      refresh.current = null;
      refetchStats({ requestPolicy: 'network-only' });
    }, 500);
  }, [refetchStats]);
  useEffect(() => () => void (refresh.current && clearTimeout(refresh.current)), []);

  const signedIn = !stats.error && stats.data !== undefined;
  useSubscription({ query: DashboardCallEventsDocument, pause: !signedIn }, (_previous, event) => {
    if (event.callEvents.missed > 0) refetchCalls({ requestPolicy: 'network-only' });
    setLive((rows) => [event.callEvents.call, ...rows.filter((row) => row.id !== event.callEvents.call.id)].slice(0, tableRows));
    scheduleRefresh();
    return event;
  });

  // Without a key, a server that needs one answers UNAUTHENTICATED: that is no error to show yet.
  if (stats.error) return <SignIn error={apiKey || stats.error.graphQLErrors.length === 0 ? errorOf(stats.error) : null} onSignIn={onSignIn} />;
  if (!stats.data) return <div class="loading">Loading…</div>;

  const fetched = calls.data?.calls.edges.map((edge) => edge.node) ?? [];
  const seen = new Set(live.map((row) => row.id));
  const fetchedIds = new Set(fetched.map((row) => row.id));
  const rows = [...live, ...fetched.filter((row) => !seen.has(row.id))].slice(0, tableRows);
  const me = stats.data.me;
  const who = me ? `${me.name} · ${me.role} of ${me.tenant} (${me.prefix}…)` : apiKey ? 'master key: every tenant' : 'open mode: no key needed';
  return (
    <div class="page">
      <header>
        <h1>Callboard</h1>
        <span class="who" data-testid="who">{who}</span>
        <span class={streaming ? 'live on' : 'live'} data-testid="live" title="New calls appear as they finish (callEvents)">
          {streaming ? '● live' : '○ connecting'}
        </span>
        <select
          aria-label="Range"
          value={range.id}
          onChange={(event) => {
            setRange(ranges.find((one) => one.id === (event.target as HTMLSelectElement).value) ?? ranges[0]);
            setNow(Date.now());
            setLive([]);
          }}
        >
          {ranges.map((one) => (
            <option value={one.id}>{one.label}</option>
          ))}
        </select>
        {apiKey ? (
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        ) : null}
      </header>
      <Totals totals={stats.data.totals[0]} />
      <div class="charts">
        <OverTime buckets={stats.data.overTime} from={Date.parse(from)} range={range} />
      </div>
      <div class="columns">
        <RecentCalls rows={rows} total={calls.data ? calls.data.calls.totalCount + live.filter((row) => !fetchedIds.has(row.id)).length : undefined} liveIds={seen} selected={selected} onSelect={setSelected} showTenant={!me || me.role === 'ADMIN'} />
        {selected ? <CallDetail id={selected} onClose={() => setSelected(null)} /> : <CostTable buckets={stats.data.byModelDay} />}
      </div>
      {selected ? <CostTable buckets={stats.data.byModelDay} /> : null}
    </div>
  );
}

function SignIn({ error, onSignIn }: { error: { code: string; message: string } | null; onSignIn(key: string): void }) {
  const input = useRef<HTMLInputElement>(null);
  return (
    <div class="sign-in">
      <form
        onSubmit={(event) => {
          event.preventDefault();
          onSignIn(input.current?.value.trim() ?? '');
        }}
      >
        <h1>Callboard</h1>
        <p>This server needs an API key. The dashboard shows what that key may read: its own tenant's calls, or every tenant's for an ADMIN key.</p>
        <label>
          API key
          <input ref={input} type="password" name="key" autocomplete="off" placeholder="cb_…" required />
        </label>
        <button type="submit">Sign in</button>
        {error ? (
          <p class="error">
            <strong data-testid="sign-in-error">{error.code}</strong> {error.message}
          </p>
        ) : null}
        <p class="hint">The key stays in this tab (sessionStorage) and is sent as Authorization: Bearer to /graphql only.</p>
      </form>
    </div>
  );
}

type Totals = DashboardStatsQuery['totals'][number];

function Totals({ totals }: { totals: Totals | undefined }) {
  const cards: [string, string, string][] = [
    ['calls', 'Calls', formatCount(totals?.calls ?? 0)],
    ['errors', 'Errors', formatCount(totals?.errors ?? 0)],
    ['hit-rate', 'Cache hit rate', formatRate(totals?.hitRate)],
    ['cost', 'Cost spent', formatMoney(totals?.costUsd)],
    ['saved', 'Saved by the cache', formatMoney(totals?.costSavedUsd)],
    ['p50', 'Latency p50', formatMs(totals?.latencyP50Ms)],
    ['p95', 'Latency p95', formatMs(totals?.latencyP95Ms)],
  ];
  return (
    <div class="cards">
      {cards.map(([id, label, value]) => (
        <div class={`card ${id === 'errors' && (totals?.errors ?? 0) > 0 ? 'bad' : ''} ${id === 'cost' || id === 'saved' ? 'money' : ''}`}>
          <div class="label">{label}</div>
          <div class="value" data-testid={`stat-${id}`}>
            {value}
          </div>
        </div>
      ))}
    </div>
  );
}

const percent = (value: number) => `${Math.round(value * 100)}%`;
const count = (value: number) => (Number.isInteger(value) ? formatCount(value) : '');

function OverTime({ buckets, from, range }: { buckets: DashboardStatsQuery['overTime']; from: number; range: Range }) {
  const chartData = useMemo(() => {
    const stepMs = range.step === 'HOUR' ? 3_600_000 : 86_400_000;
    const start = Math.floor(from / stepMs) * stepMs;
    const slots = Math.floor((Date.now() - start) / stepMs) + 1;
    const byTime = new Map(buckets.map((bucket) => [Date.parse((range.step === 'HOUR' ? bucket.hour : bucket.day) ?? ''), bucket]));
    const times: number[] = [];
    const calls: (number | null)[] = [];
    const errors: (number | null)[] = [];
    const hitRate: (number | null)[] = [];
    const p50: (number | null)[] = [];
    const p95: (number | null)[] = [];
    for (let slot = 0; slot < slots; slot++) {
      const time = start + slot * stepMs;
      const bucket = byTime.get(time);
      times.push(time / 1000);
      calls.push(bucket?.calls ?? 0);
      errors.push(bucket?.errors ?? 0);
      hitRate.push(bucket?.hitRate ?? null);
      p50.push(bucket?.latencyP50Ms ?? null);
      p95.push(bucket?.latencyP95Ms ?? null);
    }
    const volume: ChartSeries[] = [
      { label: 'Calls', color: '#4f8cff', values: calls, bars: true, format: (value) => (value === null ? '—' : formatCount(value)) },
      { label: 'Errors', color: '#ff5c6c', values: errors, bars: true, format: (value) => (value === null ? '—' : formatCount(value)) },
    ];
    const hits: ChartSeries[] = [{ label: 'Hit rate', color: '#3ccf91', values: hitRate, format: (value) => formatRate(value) }];
    const latency: ChartSeries[] = [
      { label: 'p50', color: '#f5b942', values: p50, format: (value) => formatMs(value) },
      { label: 'p95', color: '#c77dff', values: p95, format: (value) => formatMs(value) },
    ];
    return { times, volume, hits, latency };
  }, [buckets, from, range]);
  const per = range.step === 'HOUR' ? 'hour' : 'day';
  return (
    <>
      <Chart title={`Calls and errors per ${per}`} testId="chart-calls" times={chartData.times} series={chartData.volume} axis={count} />
      <Chart title={`Cache hit rate per ${per}`} testId="chart-hit-rate" times={chartData.times} series={chartData.hits} axis={percent} max={1} />
      <Chart title={`Latency per ${per} (p50, p95)`} testId="chart-latency" times={chartData.times} series={chartData.latency} axis={(value) => formatMs(value)} />
    </>
  );
}

function CostTable({ buckets }: { buckets: DashboardStatsQuery['byModelDay'] }) {
  const sorted = [...buckets].sort((a, b) => (b.day ?? '').localeCompare(a.day ?? '') || (a.model ?? '').localeCompare(b.model ?? ''));
  const spent = sumMoney(buckets.map((bucket) => bucket.costUsd));
  const saved = sumMoney(buckets.map((bucket) => bucket.costSavedUsd));
  const widest = Math.max(...buckets.map((bucket) => (moneyValue(bucket.costUsd) ?? 0) + (moneyValue(bucket.costSavedUsd) ?? 0)), 0);
  return (
    <section class="panel cost" data-testid="cost-by-model">
      <h2>Cost by model and day</h2>
      <table>
        <thead>
          <tr>
            <th>Day (UTC)</th>
            <th>Model</th>
            <th class="num">Calls</th>
            <th class="num">Spent</th>
            <th class="num">Saved</th>
            <th class="bar-cell" />
          </tr>
        </thead>
        <tbody>
          {sorted.map((bucket) => {
            const cost = moneyValue(bucket.costUsd) ?? 0;
            const save = moneyValue(bucket.costSavedUsd) ?? 0;
            return (
              <tr>
                <td>{formatDay(bucket.day)}</td>
                <td>{bucket.model}</td>
                <td class="num">{formatCount(bucket.calls)}</td>
                <td class="num">{formatMoney(bucket.costUsd)}</td>
                <td class="num saved">{formatMoney(bucket.costSavedUsd)}</td>
                <td class="bar-cell">
                  <Bar part={cost} whole={widest} kind="spent" />
                  <Bar part={save} whole={widest} kind="saved" />
                </td>
              </tr>
            );
          })}
          {sorted.length === 0 ? (
            <tr>
              <td colSpan={6} class="empty">
                No calls in this range.
              </td>
            </tr>
          ) : null}
        </tbody>
        <tfoot>
          <tr>
            <td colSpan={3}>Total</td>
            <td class="num" data-testid="cost-total-spent">
              {formatMoney(spent)}
            </td>
            <td class="num saved" data-testid="cost-total-saved">
              {formatMoney(saved)}
            </td>
            <td />
          </tr>
        </tfoot>
      </table>
    </section>
  );
}

/** A bar as a <meter>-like span: its width is set through the CSSOM (the page's CSP allows no inline style attributes). */
function Bar({ part, whole, kind }: { part: number; whole: number; kind: 'spent' | 'saved' }) {
  const ref = useRef<HTMLSpanElement>(null);
  useEffect(() => {
    if (ref.current) ref.current.style.width = `${whole > 0 ? (part / whole) * 100 : 0}%`;
  }, [part, whole]);
  return <span ref={ref} class={`bar ${kind}`} />;
}

interface RecentCallsProps {
  rows: DashboardCallRowFragment[];
  total: number | undefined;
  liveIds: Set<string>;
  selected: string | null;
  onSelect(id: string): void;
  showTenant: boolean;
}

function RecentCalls({ rows, total, liveIds, selected, onSelect, showTenant }: RecentCallsProps) {
  return (
    <section class="panel calls" data-testid="recent-calls">
      <h2>
        Recent calls <span class="muted">{total === undefined ? '' : `(${formatCount(total)} in range, newest first)`}</span>
      </h2>
      <table>
        <thead>
          <tr>
            <th>Time</th>
            {showTenant ? <th>Tenant</th> : null}
            <th>Model</th>
            <th>Status</th>
            <th>Cache</th>
            <th class="num">Latency</th>
            <th class="num">Cost</th>
            <th class="num">Tries</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((row) => (
            <tr
              key={row.id}
              data-call-id={row.id}
              class={`${row.id === selected ? 'selected' : ''} ${liveIds.has(row.id) ? 'fresh' : ''}`}
              tabIndex={0}
              onClick={() => onSelect(row.id)}
              onKeyDown={(event) => event.key === 'Enter' && onSelect(row.id)}
            >
              <td>{formatTime(row.createdAt)}</td>
              {showTenant ? <td>{row.tenant}</td> : null}
              <td>
                {row.model}
                {row.kind === 'EMBEDDING' ? <span class="tag">emb</span> : null}
              </td>
              <td>{row.status === 'ERROR' ? <span class="pill bad">{row.errorCode ?? 'ERROR'}</span> : <span class="pill ok">OK</span>}</td>
              <td>
                <span class={`pill cache-${row.cacheStatus.toLowerCase()}`}>{row.cacheStatus}</span>
              </td>
              <td class="num">{formatMs(row.latencyMs)}</td>
              <td class="num" title={row.costSavedUsd ? `${formatMoney(row.costSavedUsd)} saved by the cache` : undefined}>
                {row.costSavedUsd ? <span class="saved">{formatMoney(row.costSavedUsd)} saved</span> : formatMoney(row.costUsd)}
              </td>
              <td class="num">{row.attemptCount}</td>
            </tr>
          ))}
          {rows.length === 0 ? (
            <tr>
              <td colSpan={8} class="empty">
                No calls yet: they appear here as they finish.
              </td>
            </tr>
          ) : null}
        </tbody>
      </table>
    </section>
  );
}

function CallDetail({ id, onClose }: { id: string; onClose(): void }) {
  const [result] = useQuery({ query: DashboardCallDocument, variables: { id } });
  const call = result.data?.call;
  return (
    <section class="panel detail" data-testid="call-detail">
      <h2>
        Call <code>{id}</code>
        <button type="button" class="close" onClick={onClose} aria-label="Close">
          ×
        </button>
      </h2>
      {result.error ? <p class="error">{errorOf(result.error).code}: {errorOf(result.error).message}</p> : null}
      {result.fetching && !call ? <p class="muted">Loading…</p> : null}
      {result.data && !call ? <p class="muted">Not found (or not this key's tenant).</p> : null}
      {call ? (
        <>
          <dl>
            <dt>When</dt>
            <dd>{formatTime(call.createdAt)}</dd>
            <dt>Tenant</dt>
            <dd>{call.tenant}</dd>
            <dt>Model</dt>
            <dd>
              {call.model} <span class="muted">({call.apiType}, {call.kind.toLowerCase()})</span>
            </dd>
            <dt>Status</dt>
            <dd data-testid="detail-status">
              {call.status}
              {call.errorCode ? ` · ${call.errorCode}` : ''}
            </dd>
            {call.errorMessage ? (
              <>
                <dt>Error</dt>
                <dd class="error">{call.errorMessage}</dd>
              </>
            ) : null}
            <dt>Cache</dt>
            <dd>{call.cacheStatus}</dd>
            <dt>Latency</dt>
            <dd>
              {formatMs(call.latencyMs)}
              {call.streamed ? ` (first token ${formatMs(call.timeToFirstTokenMs)})` : ''}
            </dd>
            <dt>Tokens</dt>
            <dd>{call.usage ? `${formatCount(call.usage.promptTokens)} in, ${formatCount(call.usage.completionTokens)} out` : '—'}</dd>
            <dt>Cost</dt>
            <dd>
              {formatMoney(call.costUsd)} spent
              {call.costSavedUsd !== null && call.costSavedUsd !== undefined ? `, ${formatMoney(call.costSavedUsd)} saved by the cache` : ''}
            </dd>
            {call.tags.length > 0 ? (
              <>
                <dt>Tags</dt>
                <dd>{call.tags.join(', ')}</dd>
              </>
            ) : null}
          </dl>
          <h3>Attempts ({call.attempts.length})</h3>
          {call.attempts.length === 0 ? (
            <p class="muted">None: answered without calling the provider.</p>
          ) : (
            <table class="attempts">
              <thead>
                <tr>
                  <th class="num">#</th>
                  <th>Started</th>
                  <th class="num">HTTP</th>
                  <th class="num">Latency</th>
                  <th class="num">Wait</th>
                  <th>Error</th>
                </tr>
              </thead>
              <tbody>
                {call.attempts.map((attempt) => (
                  <tr data-testid="attempt">
                    <td class="num">{attempt.number}</td>
                    <td>{formatClock(attempt.startedAt)}</td>
                    <td class="num">{attempt.httpStatus ?? '—'}</td>
                    <td class="num">{formatMs(attempt.latencyMs)}</td>
                    <td class="num">{attempt.waitMs === null ? '—' : formatMs(attempt.waitMs)}</td>
                    <td class="wrap" title={attempt.errorMessage ?? ''}>
                      {attempt.errorCode ?? ''}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <h3>Cache entry</h3>
          {call.cacheEntry ? (
            <dl data-testid="cache-entry">
              <dt>Key</dt>
              <dd>
                <code>{call.cacheEntry.key.slice(0, 16)}…</code>
              </dd>
              <dt>Hits</dt>
              <dd data-testid="cache-hits">{formatCount(call.cacheEntry.hitCount)}</dd>
              <dt>Stored</dt>
              <dd>{formatTime(call.cacheEntry.createdAt)}</dd>
              <dt>Last hit</dt>
              <dd>{formatTime(call.cacheEntry.lastHitAt)}</dd>
              <dt>Expires</dt>
              <dd>{call.cacheEntry.expiresAt ? formatTime(call.cacheEntry.expiresAt) : 'never'}</dd>
              <dt>Cost per answer</dt>
              <dd>{formatMoney(call.cacheEntry.costUsd)}</dd>
            </dl>
          ) : (
            <p class="muted">{call.cacheKey ? 'Gone (invalidated, expired or replaced).' : 'None: the cache was not used.'}</p>
          )}
        </>
      ) : null}
    </section>
  );
}

render(<App />, document.getElementById('app')!);
