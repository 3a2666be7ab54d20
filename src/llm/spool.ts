import { mkdir, open, readdir, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** A sealed segment of the spool: its lines, oldest first, and how many of them are already written. */
export interface SpoolSegment {
  name: string;
  lines: string[];
  done: number;
}

/**
 * A durable FIFO of history rows on local disk, for when the database cannot take them: append-only
 * NDJSON segment files named by a sequence number, fsync'd on each `sync()`, each with a `.done`
 * side file counting its lines already written to the database (so a restart resumes after them).
 * One process owns a folder.
 */
export interface Spool {
  readonly dir: string;
  /** Lines appended, synced or not, and not yet removed after being written. */
  size(): number;
  /** Bytes of the segment files on disk (lines already written included, until their segment is removed). */
  bytes(): number;
  /** When (epoch ms) the spool last went from empty to holding lines: its oldest line is at least this old; null when empty. */
  heldSince(): number | null;
  /** Queues lines at the end; they are on disk after the next `sync()`. */
  append(lines: readonly string[]): void;
  /** Writes lines durably before every other segment (they are older than what the spool holds). */
  prepend(lines: readonly string[]): Promise<void>;
  /** Writes and fsyncs what was appended since the last sync. */
  sync(): Promise<void>;
  /** The oldest segment, sealing the one being appended to when it is the only one; null when empty. */
  oldest(): Promise<SpoolSegment | null>;
  /** Records that the first `done` lines of a segment are in the database. */
  markDone(segment: SpoolSegment, done: number): Promise<void>;
  /** Deletes a segment whose lines are all in the database. */
  remove(name: string): Promise<void>;
  close(): Promise<void>;
}

/** A segment is sealed past this many lines, so replay never reads a huge file at once. */
const segmentLines = 2000;
const segmentPattern = /^(\d{16})\.ndjson$/;
/** Room below the first sequence number for segments prepended before it. */
const firstSequence = 1_000_000_000_000;

export async function openSpool(dir: string): Promise<Spool> {
  let created = false;
  const ensureDir = async () => {
    if (!created) await mkdir(dir, { recursive: true });
    created = true;
  };
  // Sequence numbers of segments on disk, oldest first, and their line counts (not yet removed).
  const segments: { sequence: number; lines: number; bytes: number }[] = [];
  let heldSince: number | null = null;
  let existing: string[] = [];
  try {
    existing = await readdir(dir);
    created = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  for (const file of existing.sort()) {
    const match = segmentPattern.exec(file);
    if (!match) continue;
    const text = await readFile(join(dir, file), 'utf8');
    const done = await readDone(join(dir, file));
    const lines = Math.max(0, splitLines(text).length - done);
    segments.push({ sequence: Number(match[1]), lines, bytes: Buffer.byteLength(text) });
    // A segment left by an earlier process: its last change is the latest its lines can date from.
    if (lines > 0) heldSince ??= (await stat(join(dir, file))).mtimeMs;
  }
  let active: { sequence: number; handle: FileHandle; lines: number } | null = null;
  let buffered: string[] = [];
  let nextSequence = segments.length > 0 ? segments.at(-1)!.sequence + 1 : firstSequence;
  let chain: Promise<unknown> = Promise.resolve();
  // Every file operation runs after the previous one: a seal must never close a handle an append is using.
  const serial = <T,>(work: () => Promise<T>): Promise<T> => {
    const result = chain.then(work, work);
    chain = result.catch(() => {});
    return result;
  };

  const fileOf = (sequence: number) => join(dir, `${String(sequence).padStart(16, '0')}.ndjson`);
  const nameOf = (sequence: number) => `${String(sequence).padStart(16, '0')}.ndjson`;

  async function seal(): Promise<void> {
    if (!active) return;
    const closing = active;
    active = null;
    await closing.handle.close();
  }

  async function writeBuffered(): Promise<void> {
    if (buffered.length === 0) return;
    // The lines leave the buffer only once they are on disk: a failed write is tried again.
    const lines = buffered.slice();
    await ensureDir();
    if (!active || active.lines >= segmentLines) {
      await seal();
      const sequence = nextSequence++;
      active = { sequence, handle: await open(fileOf(sequence), 'a'), lines: 0 };
      segments.push({ sequence, lines: 0, bytes: 0 });
    }
    const text = `${lines.join('\n')}\n`;
    await active.handle.appendFile(text);
    await active.handle.sync();
    buffered.splice(0, lines.length);
    active.lines += lines.length;
    segments.at(-1)!.lines += lines.length;
    segments.at(-1)!.bytes += Buffer.byteLength(text);
  }

  const sync = () => serial(writeBuffered);
  const size = () => segments.reduce((sum, segment) => sum + segment.lines, 0) + buffered.length;

  return {
    dir,
    size,
    bytes: () => segments.reduce((sum, segment) => sum + segment.bytes, 0),
    heldSince: () => heldSince,
    append(lines) {
      if (lines.length === 0) return;
      heldSince ??= Date.now();
      buffered.push(...lines);
    },
    prepend: (lines) => serial(async () => {
      if (lines.length === 0) return;
      await ensureDir();
      const sequence = (segments[0]?.sequence ?? nextSequence) - 1;
      if (segments.length === 0) nextSequence = sequence + 1;
      const handle = await open(fileOf(sequence), 'wx');
      const text = `${lines.join('\n')}\n`;
      try {
        await handle.appendFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
      heldSince ??= Date.now();
      segments.unshift({ sequence, lines: lines.length, bytes: Buffer.byteLength(text) });
      if (nextSequence <= sequence) nextSequence = sequence + 1;
    }),
    sync,
    oldest: () => serial(async () => {
      await writeBuffered();
      const first = segments[0];
      if (!first) return null;
      if (active?.sequence === first.sequence) await seal();
      const path = fileOf(first.sequence);
      const lines = splitLines(await readFile(path, 'utf8'));
      return { name: nameOf(first.sequence), lines, done: await readDone(path) };
    }),
    markDone: (segment, done) => serial(async () => {
      const handle = await open(join(dir, `${segment.name}.done`), 'w');
      try {
        await handle.writeFile(String(done));
        await handle.sync();
      } finally {
        await handle.close();
      }
      const known = segments.find((candidate) => nameOf(candidate.sequence) === segment.name);
      if (known) known.lines = Math.max(0, segment.lines.length - done);
    }),
    remove: (name) => serial(async () => {
      const index = segments.findIndex((candidate) => nameOf(candidate.sequence) === name);
      if (index >= 0) segments.splice(index, 1);
      await rm(join(dir, name), { force: true });
      await rm(join(dir, `${name}.done`), { force: true });
      if (size() === 0) heldSince = null;
    }),
    close: () => serial(async () => {
      await writeBuffered();
      await seal();
    }),
  };
}

async function readDone(segmentPath: string): Promise<number> {
  try {
    const count = Number((await readFile(`${segmentPath}.done`, 'utf8')).trim());
    return Number.isSafeInteger(count) && count > 0 ? count : 0;
  } catch {
    return 0;
  }
}

/** A crash can leave a segment's last line cut short: it has no newline and is dropped. */
function splitLines(text: string): string[] {
  const lines = text.split('\n');
  lines.pop();
  return lines.filter((line) => line !== '');
}
