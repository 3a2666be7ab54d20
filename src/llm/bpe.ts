/**
 * A byte-pair encoder that gives the same token ids as OpenAI's tiktoken (those of js-tiktoken, but for the two
 * characters where js-tiktoken's whitespace is not tiktoken's), in time near-linear in the input even for one
 * very long "word", where js-tiktoken's merge loop is quadratic.
 *
 * The text is split into pieces by the encoding's pre-tokenizer pattern (by hand where the text is ASCII, by the
 * regex elsewhere); each piece is UTF-8 encoded (a lone surrogate as U+FFFD, as TextEncoder does) into a scratch
 * buffer and looked up whole in an open-addressing table keyed by bytes, so the common case allocates nothing.
 * Other pieces are merged by tiktoken's rule (always the pair whose concatenation has the lowest rank, leftmost
 * first): by rescanning for short pieces, and for long ones with a min-heap over adjacent pairs and a linked list
 * of parts, stale heap entries being skipped when popped, in O(n log n). Two caches spare repeated work: the token
 * counts of short merged pieces, keyed by their bytes, and the rank of a pair of tokens, keyed by their ranks.
 */

/** The shape of js-tiktoken's rank files (`js-tiktoken/ranks/*`). */
export interface RankFile {
  pat_str: string;
  special_tokens: Record<string, number>;
  bpe_ranks: string;
}

export interface BytePairEncoderOptions {
  /** Pieces of at least this many bytes are merged with the heap, shorter ones by rescanning (default 128). */
  heapFromBytes?: number;
  /** False to find every piece with the regex, even where the ASCII scanner knows the two shipped patterns. */
  asciiScanner?: boolean;
}

// The patterns of js-tiktoken's rank files that asciiPieceEnd follows.
const o200kPattern =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const cl100kPattern =
  "('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/**
 * tiktoken's `\s` is Unicode's White_Space (Rust's regex); JavaScript's also takes U+FEFF and leaves out U+0085.
 * js-tiktoken runs the pattern as is, so it splits differently from OpenAI's tiktoken around those two characters;
 * the pattern is rewritten with tiktoken's whitespace, spelled out.
 */
const whiteSpace = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

export function withTiktokenWhitespace(pattern: string): string {
  let rewritten = '';
  let inClass = false;
  for (let index = 0; index < pattern.length; index++) {
    const character = pattern[index]!;
    if (character === '\\') {
      const escaped = pattern[++index]!;
      if (escaped === 's') rewritten += inClass ? whiteSpace : `[${whiteSpace}]`;
      else if (escaped === 'S' && !inClass) rewritten += `[^${whiteSpace}]`;
      else if (escaped === 'S') throw new Error('\\S inside a character class is not supported');
      else rewritten += `\\${escaped}`;
      continue;
    }
    if (character === '[') inClass = true;
    else if (character === ']') inClass = false;
    rewritten += character;
  }
  return rewritten;
}

const noRank = -1;
// The cache of merged pieces: slots of four numbers (hash, offset in the pool, byte length or 0 when empty, token
// count), two-way set-associative by the hash of the piece's bytes, which are copied into the pool; when the pool is full,
// pool and slots start over. Keyed by bytes rather than by substrings: V8 makes a substring of 13 characters or
// more a view that keeps its whole source string alive, and a cache of them would hold on to requests' texts.
const pieceCacheSlots = 8192;
const pieceCacheBytes = 1 << 18;
// Heap keys pack (rank, start) into one double, rank * 2^32 + start, which orders by rank, then leftmost start.
// Exact while rank < 2^21; a piece has fewer than 2^32 bytes (a string holds under 2^30 UTF-16 units).
const startSpan = 2 ** 32;
const rankLimit = 2 ** 21;

function fnv1a(bytes: Uint8Array, start: number, end: number): number {
  let hash = 0x811c9dc5;
  for (let index = start; index < end; index++) {
    hash = Math.imul(hash ^ bytes[index]!, 0x01000193);
  }
  return hash >>> 0;
}

const base64Values = (() => {
  const values = new Int8Array(128).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let index = 0; index < alphabet.length; index++) values[alphabet.charCodeAt(index)] = index;
  return values;
})();

/** Decodes base64 text[start, end) into target at offset; returns the number of bytes written. */
function decodeBase64Into(text: string, start: number, end: number, target: Uint8Array, offset: number): number {
  let bits = 0;
  let bitCount = 0;
  let written = 0;
  for (let index = start; index < end; index++) {
    const code = text.charCodeAt(index);
    if (code === 61 /* = */) break;
    const value = code < 128 ? base64Values[code]! : -1;
    if (value < 0) throw new Error(`Invalid base64 in rank file at ${index}`);
    bits = (bits << 6) | value;
    bitCount += 6;
    if (bitCount >= 8) {
      bitCount -= 8;
      target[offset + written++] = (bits >>> bitCount) & 0xff;
    }
  }
  return written;
}

// The pre-tokenizer regex costs most of the time on ordinary text. For the two patterns we ship, the piece that
// starts at an ASCII character is found by hand below, following the regex's alternatives and backtracking in
// order; as soon as a decision would depend on a non-ASCII character (a Unicode letter, digit or space may
// continue a run), the scanner gives up and the regex decides that piece.

const atEnd = 0;
const lowerLetter = 1;
const upperLetter = 2;
const decimalDigit = 3;
/** \r and \n */
const lineBreak = 4;
/** the space character itself, which the punctuation branch may take before its punctuation */
const spaceCharacter = 5;
/** \t, \v and \f: whitespace, and in the optional prefix class [^\r\n\p{L}\p{N}] like the space */
const otherBlank = 6;
/** any other ASCII character: [^\s\p{L}\p{N}] */
const punctuationMark = 7;
const beyondAscii = 8;

const asciiClasses = (() => {
  const classes = new Uint8Array(128).fill(punctuationMark);
  for (let code = 97; code <= 122; code++) classes[code] = lowerLetter;
  for (let code = 65; code <= 90; code++) classes[code] = upperLetter;
  for (let code = 48; code <= 57; code++) classes[code] = decimalDigit;
  classes[10] = lineBreak;
  classes[13] = lineBreak;
  classes[32] = spaceCharacter;
  classes[9] = otherBlank;
  classes[11] = otherBlank;
  classes[12] = otherBlank;
  return classes;
})();

function classAt(text: string, index: number): number {
  if (index >= text.length) return atEnd;
  const code = text.charCodeAt(index);
  return code < 128 ? asciiClasses[code]! : beyondAscii;
}

/** End of tiktoken's contraction ('s 't 're 've 'm 'll 'd, any case) at index, or index when there is none. */
function contractionEnd(text: string, index: number): number {
  if (text.charCodeAt(index) !== 39 /* ' */) return index;
  const first = text.charCodeAt(index + 1) | 0x20; // lower-cases ASCII letters; NaN past the end becomes 0x20
  if (first === 0x73 /* s */ || first === 0x74 /* t */ || first === 0x6d /* m */ || first === 0x64 /* d */) return index + 2;
  const second = text.charCodeAt(index + 2) | 0x20;
  if ((first === 0x72 /* r */ || first === 0x76) /* v */ && second === 0x65 /* e */) return index + 3;
  if (first === 0x6c /* l */ && second === 0x6c) return index + 3;
  return index;
}

/** \s*[\r\n]+|\s+(?!\S)|\s+ at a whitespace character. */
function whitespaceEnd(text: string, start: number): number {
  let index = start;
  let lastNewline = -1;
  for (;;) {
    const kind = classAt(text, index);
    if (kind === lineBreak) lastNewline = index;
    else if (kind !== spaceCharacter && kind !== otherBlank) {
      if (kind === beyondAscii) return -1;
      break;
    }
    index++;
  }
  if (lastNewline >= 0) return lastNewline + 1;
  if (index === text.length || index - start === 1) return index;
  return index - 1;
}

/** The letter branches: an optional prefix character, then letters, then (o200k) a contraction. */
function lettersEnd(text: string, from: number, o200k: boolean): number {
  let index = from;
  if (o200k) {
    // [Lu...]*[Ll...]+ and else [Lu...]+[Ll...]*: either way uppercase letters, then lowercase ones.
    while (classAt(text, index) === upperLetter) index++;
    while (classAt(text, index) === lowerLetter) index++;
  } else {
    for (let kind = classAt(text, index); kind === upperLetter || kind === lowerLetter; kind = classAt(text, index)) index++;
  }
  if (classAt(text, index) === beyondAscii) return -1;
  return o200k ? contractionEnd(text, index) : index;
}

/**
 * ` ?[^\s\p{L}\p{N}]+[\r\n/]*` (o200k) or ` ?[^\s\p{L}\p{N}]+[\r\n]*` (cl100k): its end, -2 when the branch does
 * not match, or -1 when a non-ASCII character decides.
 */
function punctuationEnd(text: string, start: number, o200k: boolean): number {
  let index = text.charCodeAt(start) === 32 ? start + 1 : start;
  const runStart = index;
  let kind = classAt(text, index);
  while (kind === punctuationMark) kind = classAt(text, ++index);
  if (kind === beyondAscii) return -1;
  if (index === runStart) return -2; // nothing after the optional space: the branch fails
  for (;;) {
    const code = text.charCodeAt(index);
    if (code === 10 || code === 13 || (o200k && code === 47 /* / */)) index++;
    else return index;
  }
}

/**
 * End of the piece the encoding's pattern matches at `start` (an ASCII character), or -1 when a non-ASCII
 * character could change the answer.
 */
function asciiPieceEnd(text: string, start: number, o200k: boolean): number {
  const kind = classAt(text, start);
  if (kind === lowerLetter || kind === upperLetter) return lettersEnd(text, start, o200k);
  if (kind === decimalDigit) {
    let index = start + 1;
    while (index < start + 3 && classAt(text, index) === decimalDigit) index++;
    return index < start + 3 && classAt(text, index) === beyondAscii ? -1 : index;
  }
  if (!o200k && kind === punctuationMark) {
    const contraction = contractionEnd(text, start);
    if (contraction !== start) return contraction;
  }
  if (kind === punctuationMark || kind === spaceCharacter || kind === otherBlank) {
    const next = classAt(text, start + 1);
    if (next === beyondAscii) return -1;
    if (next === lowerLetter || next === upperLetter) return lettersEnd(text, start + 1, o200k);
    const punctuationMatch = punctuationEnd(text, start, o200k);
    if (punctuationMatch !== -2) return punctuationMatch;
  }
  return whitespaceEnd(text, start);
}

/**
 * Merge state of one long piece, kept in its own buffers so that an asynchronous count can pause in the middle of
 * it while other counts use the encoder's scratch space.
 */
class HeapMerge {
  private readonly next: Int32Array;
  private readonly previous: Int32Array;
  /** Rank of the token the part starting here is. */
  private readonly partRank: Int32Array;
  /** Rank of the concatenation of the part starting here with the part after it, or noRank. */
  private readonly pairRank: Int32Array;
  private readonly heap: Float64Array;
  private heapSize = 0;
  private steps = 0;
  parts: number;

  /** Pairs [0, initialized) have their rank computed and their heap entry pushed. */
  private initialized = 0;

  constructor(
    private readonly encoder: BytePairEncoder,
    private readonly bytes: Uint8Array,
  ) {
    const length = bytes.length;
    this.parts = length;
    this.next = new Int32Array(length);
    this.previous = new Int32Array(length);
    this.partRank = new Int32Array(length);
    this.pairRank = new Int32Array(length);
    // The heap starts with fewer than `length` pairs, and each merge pops one entry and pushes at most two.
    this.heap = new Float64Array(2 * length);
    // Parts of one byte each; part 0 here, the others as run() ranks the pair they end.
    this.next[0] = 1;
    this.previous[0] = -1;
    this.partRank[0] = encoder.byteRank(bytes[0]!);
    this.pairRank[length - 1] = noRank;
  }

  /** Does up to `budget` steps (a pair ranked or a heap entry popped); returns true once no pair can merge. */
  run(budget: number): boolean {
    let step = 0;
    const lastPair = this.bytes.length - 1;
    if (this.initialized < lastPair) {
      const { bytes, next, previous, partRank, pairRank, encoder } = this;
      let index = this.initialized;
      // Pushing one at a time (rather than heapifying at the end) lets a count pause half-way through a huge piece.
      for (; index < lastPair && step < budget; index++, step++) {
        next[index + 1] = index + 2;
        previous[index + 1] = index;
        partRank[index + 1] = encoder.byteRank(bytes[index + 1]!);
        const rank = encoder.pairRank(partRank[index]!, partRank[index + 1]!, bytes, index, index + 2);
        pairRank[index] = rank;
        if (rank !== noRank) this.push(rank * startSpan + index);
      }
      this.initialized = index;
      this.steps += step;
      if (index < lastPair) return false;
    }
    return this.merge(budget - step);
  }

  /** Steps done since the last call. */
  takeSteps(): number {
    const steps = this.steps;
    this.steps = 0;
    return steps;
  }

  private merge(budget: number): boolean {
    const { bytes, next, previous, partRank, pairRank, heap, encoder } = this;
    const length = bytes.length;
    let step = 0;
    for (; step < budget && this.heapSize > 0; step++) {
      const key = heap[0]!;
      this.heapSize--;
      if (this.heapSize > 0) {
        heap[0] = heap[this.heapSize]!;
        this.siftDown(0);
      }
      const rank = Math.floor(key / startSpan);
      const start = key - rank * startSpan;
      // A part's pair only ever grows to the right, so its rank never comes back: an entry whose rank is not the
      // current one is stale.
      if (pairRank[start] !== rank) continue;
      const right = next[start]!;
      const afterRight = next[right]!;
      next[start] = afterRight;
      if (afterRight < length) previous[afterRight] = start;
      pairRank[right] = noRank;
      partRank[start] = rank;
      this.parts--;

      if (afterRight < length) {
        const newRank = encoder.pairRank(rank, partRank[afterRight]!, bytes, start, next[afterRight]!);
        pairRank[start] = newRank;
        if (newRank !== noRank) this.push(newRank * startSpan + start);
      } else {
        pairRank[start] = noRank;
      }
      const before = previous[start]!;
      if (before >= 0) {
        const beforeRank = encoder.pairRank(partRank[before]!, rank, bytes, before, afterRight);
        pairRank[before] = beforeRank;
        if (beforeRank !== noRank) this.push(beforeRank * startSpan + before);
      }
    }
    this.steps += step;
    return this.heapSize === 0;
  }

  /** Appends the ranks of the final parts. */
  emit(output: number[]): void {
    const length = this.bytes.length;
    for (let start = 0; start < length; start = this.next[start]!) output.push(this.partRank[start]!);
  }

  private push(key: number): void {
    const heap = this.heap;
    let index = this.heapSize++;
    while (index > 0) {
      const parent = (index - 1) >> 2;
      const parentKey = heap[parent]!;
      if (parentKey <= key) break;
      heap[index] = parentKey;
      index = parent;
    }
    heap[index] = key;
  }

  private siftDown(from: number): void {
    const heap = this.heap;
    const size = this.heapSize;
    const key = heap[from]!;
    let index = from;
    for (;;) {
      const first = 4 * index + 1;
      if (first >= size) break;
      // A four-way heap: half the depth of a binary one, and the four children share a cache line.
      let child = first;
      let childKey = heap[first]!;
      const last = first + 4 < size ? first + 4 : size;
      for (let other = first + 1; other < last; other++) {
        if (heap[other]! < childKey) {
          childKey = heap[other]!;
          child = other;
        }
      }
      if (childKey >= key) break;
      heap[index] = childKey;
      index = child;
    }
    heap[index] = key;
  }
}

/** An encoding in progress over one text; `BytePairEncoder.advance` moves it on by a bounded amount of work. */
export class EncodeJob {
  /** Where the next piece starts. */
  position = 0;
  /** A long piece whose merge was paused; its tokens are not counted yet. */
  pending: HeapMerge | null = null;
  tokens = 0;
  /** Units of work done so far (bytes encoded, pairs ranked, heap entries popped). */
  work = 0;

  constructor(
    readonly text: string,
    /** Receives the token ids, or null to only count them. */
    readonly output: number[] | null,
  ) {}

  get done(): boolean {
    return this.pending === null && this.position >= this.text.length;
  }
}

export class BytePairEncoder {
  /** Every token's bytes, one after another; token i holds bytes [tokenOffsets[i], tokenOffsets[i + 1]). */
  private readonly tokenBytes: Uint8Array;
  private readonly tokenOffsets: Int32Array;
  private readonly tokenRanks: Int32Array;
  /** Open addressing with linear probing: token index + 1, or 0 for an empty slot. */
  private readonly table: Int32Array;
  private readonly tableMask: number;
  private readonly maxTokenBytes: number;
  private readonly heapFromBytes: number;
  private readonly stickyPattern: RegExp;
  private readonly searchPattern: RegExp;
  /** Which pattern asciiPieceEnd follows: 1 for o200k_base, 2 for cl100k_base, 0 for none (regex only). */
  private readonly asciiPattern: 0 | 1 | 2;
  private scratch = new Uint8Array(1024);
  private readonly byteRanks = new Int32Array(256);
  /**
   * Direct-mapped cache of (left rank, right rank) -> rank of their concatenation (or noRank): a long piece
   * repeats few distinct pairs, and a lookup here costs no hashing of the bytes. Slots hold left, right, result;
   * left is -1 in an empty slot.
   */
  private readonly pairCache = new Int32Array(3 * 65536).fill(-1);
  // Pieces that are not one token but recur (a name, an identifier, a sentence of Chinese in a conversation sent
  // again) skip the merge the second time.
  private readonly pieceSlots = new Int32Array(4 * pieceCacheSlots);
  private readonly piecePool = new Uint8Array(pieceCacheBytes);
  private piecePoolUsed = 0;

  constructor(ranks: RankFile, options: BytePairEncoderOptions = {}) {
    this.heapFromBytes = options.heapFromBytes ?? 128;
    // tiktoken scans with the "ug" flags; sticky matching at the end of the previous piece finds the same pieces
    // whenever a piece starts there, and the pattern matches at every position (its last branches take any
    // character), so the searching fallback is only a guard.
    const pattern = withTiktokenWhitespace(ranks.pat_str);
    this.stickyPattern = new RegExp(pattern, 'uy');
    this.searchPattern = new RegExp(pattern, 'ug');
    const knownPattern = ranks.pat_str === o200kPattern ? 1 : ranks.pat_str === cl100kPattern ? 2 : 0;
    this.asciiPattern = options.asciiScanner === false ? 0 : knownPattern;

    const source = ranks.bpe_ranks;
    let tokenCount = 0;
    let byteEstimate = 0;
    const lines = source.split('\n').filter((line) => line !== '');
    for (const line of lines) {
      const fields = line.split(' ');
      tokenCount += fields.length - 2;
      for (let index = 2; index < fields.length; index++) byteEstimate += (fields[index]!.length * 3) >> 2;
    }
    this.tokenBytes = new Uint8Array(byteEstimate);
    this.tokenOffsets = new Int32Array(tokenCount + 1);
    this.tokenRanks = new Int32Array(tokenCount);
    let tableSize = 1;
    while (tableSize < tokenCount * 2) tableSize <<= 1;
    this.table = new Int32Array(tableSize);
    this.tableMask = tableSize - 1;

    const ranksSeen = new Uint8Array(rankLimit);
    let maxTokenBytes = 0;
    let count = 0;
    let offset = 0;
    for (const line of lines) {
      const fields = line.split(' ');
      const firstRank = Number.parseInt(fields[1]!, 10);
      for (let index = 2; index < fields.length; index++) {
        const token = fields[index]!;
        const written = decodeBase64Into(token, 0, token.length, this.tokenBytes, offset);
        const rank = firstRank + index - 2;
        if (!(rank >= 0 && rank < rankLimit)) throw new Error(`Rank ${rank} out of range in rank file`);
        const existing = this.find(this.tokenBytes, offset, offset + written);
        if (existing >= 0) {
          // js-tiktoken keeps the last rank given for the same bytes.
          this.tokenRanks[existing] = rank;
          continue;
        }
        // The pair cache names a token by its rank, so a rank must name one token.
        if (ranksSeen[rank] === 1) throw new Error(`Rank ${rank} given twice in rank file`);
        ranksSeen[rank] = 1;
        this.tokenOffsets[count] = offset;
        this.tokenRanks[count] = rank;
        this.tokenOffsets[count + 1] = offset + written;
        this.insert(count, fnv1a(this.tokenBytes, offset, offset + written));
        offset += written;
        count++;
        if (written > maxTokenBytes) maxTokenBytes = written;
      }
    }
    this.maxTokenBytes = maxTokenBytes;
    const single = new Uint8Array(1);
    for (let byte = 0; byte < 256; byte++) {
      single[0] = byte;
      const rank = this.rankOf(single, 0, 1);
      if (rank === noRank) throw new Error(`Rank file has no token for byte ${byte}`);
      this.byteRanks[byte] = rank;
    }
  }

  /** @internal The rank of the one-byte token. */
  byteRank(byte: number): number {
    return this.byteRanks[byte]!;
  }

  /** @internal The rank of the concatenation bytes[start, end) of the tokens ranked left and right, or noRank. */
  pairRank(left: number, right: number, bytes: Uint8Array, start: number, end: number): number {
    const cache = this.pairCache;
    const slot = 3 * ((Math.imul(left, 0x9e3779b1) ^ Math.imul(right, 0x85ebca77)) >>> 16);
    if (cache[slot] === left && cache[slot + 1] === right) return cache[slot + 2]!;
    const rank = this.rankOf(bytes, start, end);
    cache[slot] = left;
    cache[slot + 1] = right;
    cache[slot + 2] = rank;
    return rank;
  }

  private insert(tokenIndex: number, hash: number): void {
    let slot = hash & this.tableMask;
    while (this.table[slot] !== 0) slot = (slot + 1) & this.tableMask;
    this.table[slot] = tokenIndex + 1;
  }

  /** Index of the token whose bytes are bytes[start, end), or -1. */
  private find(bytes: Uint8Array, start: number, end: number): number {
    const length = end - start;
    const { table, tableMask, tokenBytes, tokenOffsets } = this;
    let slot = fnv1a(bytes, start, end) & tableMask;
    for (;;) {
      const entry = table[slot]!;
      if (entry === 0) return -1;
      const tokenIndex = entry - 1;
      const tokenStart = tokenOffsets[tokenIndex]!;
      if (tokenOffsets[tokenIndex + 1]! - tokenStart === length) {
        let index = 0;
        while (index < length && tokenBytes[tokenStart + index] === bytes[start + index]) index++;
        if (index === length) return tokenIndex;
      }
      slot = (slot + 1) & tableMask;
    }
  }

  /** The rank of the token whose bytes are bytes[start, end), or -1 when there is none. */
  rankOf(bytes: Uint8Array, start: number, end: number): number {
    if (end - start > this.maxTokenBytes) return noRank;
    const tokenIndex = this.find(bytes, start, end);
    return tokenIndex < 0 ? noRank : this.tokenRanks[tokenIndex]!;
  }

  /** Empties the caches of merged pieces and of pairs, as if no text had been counted yet (for benchmarks). */
  clearCaches(): void {
    this.clearPieceCache();
    this.pairCache.fill(-1);
  }

  /** Token ids of text, special-token text included as plain characters (js-tiktoken's encode(text, [], [])). */
  encode(text: string): number[] {
    const job = new EncodeJob(text, []);
    this.advance(job, Infinity);
    return job.output!;
  }

  /** Number of tokens encode(text) would give. */
  count(text: string): number {
    const job = new EncodeJob(text, null);
    this.advance(job, Infinity);
    return job.tokens;
  }

  /**
   * Moves the job on by about `budget` units of work (a unit is an encoded byte, a ranked pair or a heap pop, each
   * well under a microsecond), or until it is done. The job's state lives in the job, so jobs may interleave.
   */
  advance(job: EncodeJob, budget: number): void {
    const { text, output } = job;
    const length = text.length;
    const sticky = this.stickyPattern;
    const limit = job.work + budget;
    let work = job.work;
    let tokens = job.tokens;
    let position = job.position;
    if (job.pending !== null) {
      const merge = job.pending;
      const finished = merge.run(budget);
      work += merge.takeSteps();
      if (!finished) {
        job.work = work;
        return;
      }
      if (output !== null) merge.emit(output);
      tokens += merge.parts;
      job.pending = null;
    }
    const asciiPattern = this.asciiPattern;
    while (position < length && work < limit) {
      let start = position;
      let end = -1;
      if (asciiPattern !== 0 && text.charCodeAt(position) < 128) end = asciiPieceEnd(text, position, asciiPattern === 1);
      if (end <= position) {
        sticky.lastIndex = position;
        if (sticky.test(text)) {
          end = sticky.lastIndex;
        } else {
          // Characters no branch of the pattern takes are skipped, as String.prototype.matchAll skips them.
          const search = this.searchPattern;
          search.lastIndex = position;
          const match = search.exec(text);
          if (match === null) {
            position = length;
            break;
          }
          start = match.index;
          end = search.lastIndex;
        }
      }
      position = end;
      const byteLength = this.encodeUtf8(text, start, end);
      work += byteLength;
      const whole = this.rankOf(this.scratch, 0, byteLength);
      if (whole !== noRank) {
        tokens++;
        output?.push(whole);
        continue;
      }
      if (byteLength >= this.heapFromBytes) {
        const merge = new HeapMerge(this, this.scratch.slice(0, byteLength));
        if (this.scratch.length > 1 << 16) this.scratch = new Uint8Array(1024); // not kept at the size of a huge piece
        const finished = merge.run(limit - work);
        work += merge.takeSteps();
        if (!finished) {
          job.pending = merge;
          break;
        }
        if (output !== null) merge.emit(output);
        tokens += merge.parts;
        continue;
      }
      if (output !== null) {
        tokens += this.mergeShort(byteLength, output);
        continue;
      }
      const hash = fnv1a(this.scratch, 0, byteLength);
      const known = this.cachedCount(byteLength, hash);
      if (known >= 0) {
        tokens += known;
        continue;
      }
      const parts = this.mergeShort(byteLength, null);
      work += byteLength;
      this.cacheCount(byteLength, hash, parts);
      tokens += parts;
    }
    job.position = position;
    job.tokens = tokens;
    job.work = work;
  }

  /** The token count cached for the piece in scratch[0, length), whose fnv1a is hash, or -1. */
  private cachedCount(length: number, hash: number): number {
    const slots = this.pieceSlots;
    const key = hash | 0; // the slots hold it as a signed integer
    // Two ways: the set's two slots, side by side.
    const first = 8 * (hash & (pieceCacheSlots / 2 - 1));
    for (let slot = first; slot < first + 8; slot += 4) {
      if (slots[slot + 2] === length && slots[slot] === key && this.poolHolds(slots[slot + 1]!, length)) return slots[slot + 3]!;
    }
    return -1;
  }

  /** Whether the pool holds scratch[0, length) at offset. */
  private poolHolds(offset: number, length: number): boolean {
    const bytes = this.scratch;
    const pool = this.piecePool;
    for (let index = 0; index < length; index++) if (pool[offset + index] !== bytes[index]) return false;
    return true;
  }

  /**
   * Remembers the token count of the piece in scratch[0, length) (shorter than the pool), whose fnv1a is hash: in
   * the set's first slot, the entry there moving to the second (the least recently stored of the two goes).
   */
  private cacheCount(length: number, hash: number, count: number): void {
    const bytes = this.scratch;
    const slots = this.pieceSlots;
    const pool = this.piecePool;
    if (this.piecePoolUsed + length > pool.length) this.clearPieceCache();
    const offset = this.piecePoolUsed;
    for (let index = 0; index < length; index++) pool[offset + index] = bytes[index]!;
    this.piecePoolUsed = offset + length;
    const slot = 8 * (hash & (pieceCacheSlots / 2 - 1));
    slots.copyWithin(slot + 4, slot, slot + 4);
    slots[slot] = hash;
    slots[slot + 1] = offset;
    slots[slot + 2] = length;
    slots[slot + 3] = count;
  }

  private clearPieceCache(): void {
    this.pieceSlots.fill(0);
    this.piecePoolUsed = 0;
  }

  private partStarts = new Int32Array(256);
  /** Rank of the pair starting at each part, or `none`. */
  private partRanks = new Int32Array(256);
  /** Rank of the token each part is. */
  private partTokens = new Int32Array(256);

  /**
   * tiktoken's own merge over the scratch bytes [0, length): keep the rank of each adjacent pair, merge the lowest
   * (leftmost on ties), refresh the two neighbouring pairs. Quadratic, and the fastest for short pieces. A pair is
   * looked up by the ranks of its two tokens in the pair cache first, the table (and the bytes) only on a miss.
   */
  private mergeShort(length: number, output: number[] | null): number {
    const bytes = this.scratch;
    if (this.partStarts.length < length + 1) {
      this.partStarts = new Int32Array(length + 1);
      this.partRanks = new Int32Array(length + 1);
      this.partTokens = new Int32Array(length + 1);
    }
    const starts = this.partStarts;
    const ranks = this.partRanks;
    const tokens = this.partTokens;
    const byteRanks = this.byteRanks;
    const none = 0x7fffffff;
    for (let index = 0; index < length; index++) {
      starts[index] = index;
      tokens[index] = byteRanks[bytes[index]!]!;
    }
    starts[length] = length;
    let parts = length;
    for (let index = 0; index + 1 < parts; index++) {
      const rank = this.pairRank(tokens[index]!, tokens[index + 1]!, bytes, index, index + 2);
      ranks[index] = rank === noRank ? none : rank;
    }
    ranks[parts - 1] = none;
    for (;;) {
      let minimum = none;
      let at = -1;
      for (let index = 0; index + 1 < parts; index++) {
        if (ranks[index]! < minimum) {
          minimum = ranks[index]!;
          at = index;
        }
      }
      if (at < 0) break;
      // Part at+1 joins part at, which becomes the token of the pair's rank: drop part at+1. By hand rather than by
      // copyWithin, a call into the runtime that costs more than this loop over the few dozen parts of a short piece.
      tokens[at] = minimum;
      for (let index = at + 1; index < parts; index++) {
        starts[index] = starts[index + 1]!;
        ranks[index] = ranks[index + 1]!;
        tokens[index] = tokens[index + 1]!;
      }
      starts[parts] = length;
      parts--;
      if (at + 1 < parts) {
        const rank = this.pairRank(minimum, tokens[at + 1]!, bytes, starts[at]!, starts[at + 2]!);
        ranks[at] = rank === noRank ? none : rank;
      } else {
        ranks[at] = none;
      }
      if (at > 0) {
        const rank = this.pairRank(tokens[at - 1]!, minimum, bytes, starts[at - 1]!, starts[at + 1]!);
        ranks[at - 1] = rank === noRank ? none : rank;
      }
    }
    if (output !== null) {
      for (let index = 0; index < parts; index++) output.push(tokens[index]!);
    }
    return parts;
  }

  /** UTF-8 of text[start, end) into the scratch buffer, lone surrogates as U+FFFD; returns the byte count. */
  private encodeUtf8(text: string, start: number, end: number): number {
    const needed = (end - start) * 3;
    if (this.scratch.length < needed) this.scratch = new Uint8Array(Math.max(needed, this.scratch.length * 2));
    const bytes = this.scratch;
    let written = 0;
    for (let index = start; index < end; index++) {
      let code = text.charCodeAt(index);
      if (code < 0x80) {
        bytes[written++] = code;
      } else if (code < 0x800) {
        bytes[written++] = 0xc0 | (code >> 6);
        bytes[written++] = 0x80 | (code & 0x3f);
      } else if (code >= 0xd800 && code <= 0xdfff) {
        const low = index + 1 < end ? text.charCodeAt(index + 1) : 0;
        if (code <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
          code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
          index++;
          bytes[written++] = 0xf0 | (code >> 18);
          bytes[written++] = 0x80 | ((code >> 12) & 0x3f);
          bytes[written++] = 0x80 | ((code >> 6) & 0x3f);
          bytes[written++] = 0x80 | (code & 0x3f);
        } else {
          bytes[written++] = 0xef;
          bytes[written++] = 0xbf;
          bytes[written++] = 0xbd;
        }
      } else {
        bytes[written++] = 0xe0 | (code >> 12);
        bytes[written++] = 0x80 | ((code >> 6) & 0x3f);
        bytes[written++] = 0x80 | (code & 0x3f);
      }
    }
    return written;
  }
}
