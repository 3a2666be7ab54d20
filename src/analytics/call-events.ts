import type { Database } from '../db/database.ts';
import { CallboardError, badUserInput } from '../errors.ts';
import { callRecordedChannel } from '../llm/history-rows.ts';
import type { Logger } from '../logger.ts';
import { matchCalls, withinTenant, type CallFilter, type CallView, type ReadQuery } from './calls.ts';

/** A call of the history, as a subscriber receives it once it is written. */
export interface CallEvent {
  call: CallView;
  /**
   * Calls this subscriber may have missed just before this one: dropped because it read more slowly
   * than calls came, or not read because this instance fell behind or its read failed (an upper
   * bound then: those calls are counted before the subscriber's filter is applied).
   */
  missed: number;
}

export interface CallEventHubOptions {
  listen: Database['listen'];
  /** Reads the calls of each notification; the app gives the analytics pool's. */
  query: ReadQuery;
  logger: Logger;
  /** Subscriptions this instance serves at once ([Limits] MAX_SUBSCRIPTIONS); 0: none. */
  maxSubscriptions: number;
  /** Events kept for a subscriber that reads more slowly than calls come; past it the oldest are dropped and counted. @default 256 */
  bufferEvents?: number;
  /** Call ids heard of and not yet read, past which the oldest are dropped and counted. @default 10000 */
  maxPendingIds?: number;
}

/**
 * Calls as they are written, on every instance on the same database, for subscribers of this one.
 * The history announces each batch it commits (`callRecordedChannel`); the hub listens once per
 * instance and reads the announced calls in one query for all its subscribers, each subscriber's
 * tenant and filter applied by the database (the same conditions as the `calls` query).
 */
export interface CallEventHub {
  /**
   * Calls of `tenant` (null: every tenant) that match `filter`, from now until the stream is returned,
   * the hub is closed (the stream completes), or the listening connection was lost and re-made (the
   * stream completes too: calls may have been missed, subscribe again and read `calls` to catch up).
   * Throws TOO_MANY_SUBSCRIPTIONS past the bound, ABORTED once closed, BAD_USER_INPUT for a filter
   * larger than `maxFilterCharacters`.
   */
  subscribe(tenant: string | null, filter: CallFilter | null | undefined): AsyncIterableIterator<CallEvent>;
  /** Subscriptions open now. */
  size(): number;
  /** Completes every subscription, refuses new ones and stops listening. */
  close(): Promise<void>;
}

/** Events kept for a subscriber that reads more slowly than calls come. */
export const defaultBufferEvents = 256;
/** A subscriber's filter is evaluated on every notification: it is kept small. */
export const maxFilterCharacters = 4096;
/** Calls read in one query. */
const idsPerRead = 500;

/** One subscriber's stream: a bounded queue of events, the oldest dropped (and counted) when full. */
class Subscription implements AsyncIterableIterator<CallEvent> {
  private readonly queue: CallEvent[] = [];
  /** Missed calls to report with the next event. */
  private carried = 0;
  private waiting: ((result: IteratorResult<CallEvent>) => void) | null = null;
  private done = false;

  constructor(
    readonly tenant: string | null,
    /** The filter narrowed to the tenant, and its text: subscribers with the same one share its condition. */
    readonly filter: CallFilter | null | undefined,
    readonly filterKey: string,
    private readonly bufferEvents: number,
    private readonly onEnd: (subscription: Subscription) => void,
  ) {}

  reads(tenant: string): boolean {
    return this.tenant === null || this.tenant === tenant;
  }

  push(call: CallView): void {
    if (this.done) return;
    const event = { call, missed: this.carried };
    this.carried = 0;
    if (this.waiting) {
      const waiting = this.waiting;
      this.waiting = null;
      waiting({ value: event, done: false });
      return;
    }
    this.queue.push(event);
    if (this.queue.length > this.bufferEvents) {
      const dropped = this.queue.shift()!;
      this.queue[0]!.missed += dropped.missed + 1;
    }
  }

  /** Calls that could not be read for this subscriber: reported with its next event. */
  lost(count: number): void {
    this.carried += count;
  }

  next(): Promise<IteratorResult<CallEvent>> {
    const event = this.queue.shift();
    if (event) return Promise.resolve({ value: event, done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiting = resolve));
  }

  /** Ends the stream: a pending `next` completes at once (a client that went away, or the hub closing). */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.queue.length = 0;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = null;
    this.onEnd(this);
  }

  return(): Promise<IteratorResult<CallEvent>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(): Promise<IteratorResult<CallEvent>> {
    return this.return();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<CallEvent> {
    return this;
  }
}

interface Announcement {
  tenant: string;
  ids: string[];
}

function readAnnouncement(payload: string): Announcement | null {
  try {
    const message = JSON.parse(payload) as Partial<Announcement> | null;
    if (typeof message?.tenant !== 'string' || !Array.isArray(message.ids)) return null;
    return { tenant: message.tenant, ids: message.ids.filter((id): id is string => typeof id === 'string') };
  } catch {
    return null;
  }
}

export async function createCallEventHub(options: CallEventHubOptions): Promise<CallEventHub> {
  const { logger } = options;
  const bufferEvents = options.bufferEvents ?? defaultBufferEvents;
  const maxPendingIds = options.maxPendingIds ?? 10_000;
  const subscriptions = new Set<Subscription>();
  /** Announced calls not yet read, oldest first. */
  let pending: Announcement[] = [];
  let pendingIds = 0;
  let reading = false;
  let closed = false;
  let readsFailing = false;

  /** Counts calls no subscriber will receive towards the `missed` of those that read their tenant. */
  const lose = (announcements: readonly Announcement[]) => {
    for (const subscription of subscriptions) {
      const count = announcements.reduce((sum, announcement) => sum + (subscription.reads(announcement.tenant) ? announcement.ids.length : 0), 0);
      if (count > 0) subscription.lost(count);
    }
  };

  async function readPending(): Promise<void> {
    reading = true;
    try {
      while (pending.length > 0 && !closed) {
        const batch: Announcement[] = [];
        let count = 0;
        while (pending.length > 0 && count + pending[0]!.ids.length <= idsPerRead) {
          const next = pending.shift()!;
          batch.push(next);
          count += next.ids.length;
        }
        // One announcement larger than a read (not sent by this version) is read on its own.
        if (batch.length === 0) {
          batch.push(pending.shift()!);
          count = batch[0]!.ids.length;
        }
        pendingIds -= count;
        const readers = [...subscriptions].filter((subscription) => batch.some((announcement) => subscription.reads(announcement.tenant)));
        if (readers.length === 0) continue;
        // Subscribers with the same tenant and filter share one condition of the query.
        const groups = new Map<string, { filter: CallFilter | null | undefined; members: Subscription[] }>();
        for (const subscription of readers) {
          const group = groups.get(subscription.filterKey);
          if (group) group.members.push(subscription);
          else groups.set(subscription.filterKey, { filter: subscription.filter, members: [subscription] });
        }
        const ordered = [...groups.values()];
        try {
          const rows = await matchCalls(
            options.query,
            batch.flatMap((announcement) => announcement.ids),
            ordered.map((group) => group.filter),
          );
          if (readsFailing) logger.info('call events: reading announced calls again');
          readsFailing = false;
          for (const { call, matches } of rows) {
            ordered.forEach((group, index) => {
              if (matches[index]) for (const member of group.members) member.push(call);
            });
          }
        } catch (error) {
          if (!readsFailing) logger.warn({ err: error, calls: count }, 'call events: announced calls could not be read; subscribers are told how many they may have missed');
          readsFailing = true;
          lose(batch);
        }
      }
    } finally {
      reading = false;
    }
  }

  const stopListening = await options.listen(
    callRecordedChannel,
    (payload) => {
      if (closed || subscriptions.size === 0) return;
      const announcement = readAnnouncement(payload);
      if (!announcement || announcement.ids.length === 0) return;
      if (![...subscriptions].some((subscription) => subscription.reads(announcement.tenant))) return;
      pending.push(announcement);
      pendingIds += announcement.ids.length;
      if (pendingIds > maxPendingIds) {
        // This instance reads more slowly than calls are written: the oldest go, and their subscribers are told.
        const dropped: Announcement[] = [];
        while (pendingIds > maxPendingIds && pending.length > 1) {
          const oldest = pending.shift()!;
          pendingIds -= oldest.ids.length;
          dropped.push(oldest);
        }
        lose(dropped);
        logger.warn({ dropped: dropped.reduce((sum, announcement) => sum + announcement.ids.length, 0) }, 'call events: calls announced faster than they can be read; the oldest are dropped');
      }
      if (!reading) void readPending();
    },
    () => {
      // Calls announced while the connection was re-made are unknown: each subscriber starts again and catches up.
      logger.warn({ subscriptions: subscriptions.size }, 'call events: listening connection re-made; subscriptions are ended so that they catch up');
      for (const subscription of [...subscriptions]) subscription.end();
      pending = [];
      pendingIds = 0;
    },
  );

  return {
    subscribe(tenant, filter) {
      if (closed) throw new CallboardError('ABORTED', 'The server is stopping; subscribe again in a moment.');
      if (subscriptions.size >= options.maxSubscriptions) {
        throw new CallboardError(
          'TOO_MANY_SUBSCRIPTIONS',
          `This instance serves at most ${options.maxSubscriptions} subscriptions at once ([Limits] MAX_SUBSCRIPTIONS); try again later.`,
          { details: { limit: 'MAX_SUBSCRIPTIONS', max: options.maxSubscriptions } },
        );
      }
      const narrowed = withinTenant(filter, tenant);
      const filterKey = JSON.stringify(narrowed ?? null);
      if (filterKey.length > maxFilterCharacters) {
        throw badUserInput(`A subscription's filter may hold at most ${maxFilterCharacters} characters as JSON, got ${filterKey.length}.`, {
          field: 'filter',
          max: maxFilterCharacters,
          actual: filterKey.length,
        });
      }
      const subscription = new Subscription(tenant, narrowed, filterKey, bufferEvents, (ended) => subscriptions.delete(ended));
      subscriptions.add(subscription);
      return subscription;
    },
    size: () => subscriptions.size,
    async close() {
      if (closed) return;
      closed = true;
      for (const subscription of [...subscriptions]) subscription.end();
      pending = [];
      await stopListening();
    },
  };
}
