import { createHash } from 'node:crypto';

/**
 * A Bloom filter of cache keys: `mightContain` is false only for a key never added (no false
 * negatives), and true for a key never added with about `falsePositiveRate` chance while at most
 * `capacity` distinct keys were added (more past it, up to always: more "maybe", never a wrong
 * "no"). Cache keys are SHA-256 hex, uniformly random, so the k bit indexes are the key's own first
 * k 32-bit words (each modulo the number of bits): no hashing. Any other text is hashed first.
 *
 * Memory: about 1.2 bytes per key of capacity at 1% (9.6 bits per key, k = 7): 1.2 MB for a
 * million keys, capped at `maxFilterKeys` (120 MB).
 */
export class KeyFilter {
  /** Distinct keys it is sized for. */
  readonly capacity: number;
  /** Bits in the filter (m). */
  readonly bitCount: number;
  /** Bits set per key (k), at most 8: a SHA-256 holds eight 32-bit words. */
  readonly hashCount: number;
  private readonly words_: Uint32Array;
  private bitsSet_ = 0;
  /** The bits set, expected, once `capacity` distinct keys are in: past that, `full`. */
  private readonly bitsAtCapacity_: number;

  constructor(capacity: number, falsePositiveRate = 0.01) {
    this.capacity = Math.max(1, Math.min(Math.ceil(capacity), maxFilterKeys));
    const bits = Math.ceil((-this.capacity * Math.log(falsePositiveRate)) / Math.LN2 ** 2);
    this.bitCount = Math.ceil(bits / 32) * 32;
    this.hashCount = Math.min(8, Math.max(1, Math.round((this.bitCount / this.capacity) * Math.LN2)));
    this.words_ = new Uint32Array(this.bitCount / 32);
    this.bitsAtCapacity_ = this.bitCount * (1 - Math.exp((-this.hashCount * this.capacity) / this.bitCount));
  }

  add(key: string): void {
    const words = wordsOf(key);
    for (let i = 0; i < this.hashCount; i++) {
      const bit = words[i]! % this.bitCount;
      const mask = 1 << (bit & 31);
      const word = bit >>> 5;
      if ((this.words_[word]! & mask) === 0) {
        this.words_[word]! |= mask;
        this.bitsSet_ += 1;
      }
    }
  }

  /** False: the key was surely never added. True: it may have been. */
  mightContain(key: string): boolean {
    const words = wordsOf(key);
    for (let i = 0; i < this.hashCount; i++) {
      const bit = words[i]! % this.bitCount;
      if ((this.words_[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  /** Distinct keys added, estimated from the bits set (Swamidass and Baldi): duplicates do not count. */
  estimatedKeys(): number {
    if (this.bitsSet_ >= this.bitCount) return Infinity;
    return Math.round((-this.bitCount / this.hashCount) * Math.log(1 - this.bitsSet_ / this.bitCount));
  }

  /** More distinct keys than its capacity went in: its false positives are past the rate it was built for. */
  get full(): boolean {
    return this.bitsSet_ > this.bitsAtCapacity_;
  }

  /** Memory taken by the bits. */
  get bytes(): number {
    return this.words_.byteLength;
  }
}

/** The largest filter built: 100 million keys, 120 MB at 1%. */
export const maxFilterKeys = 100_000_000;

/** The value of each ASCII hex digit (either case); -1 for any other character. */
const hexValue = new Int8Array(128).fill(-1);
for (let digit = 0; digit < 16; digit++) {
  hexValue['0123456789abcdef'.charCodeAt(digit)] = digit;
  hexValue['0123456789ABCDEF'.charCodeAt(digit)] = digit;
}
/** The eight 32-bit words of the key at hand (one thread, one key at a time). */
const scratch = new Uint32Array(8);

/**
 * Reads 64 hex digits into `scratch`; false when `hex` is anything else (a
 * regex test and parseInt of slices cost about 2 µs per key on this machine; this loop 0.3).
 */
function readWords(hex: string): boolean {
  if (hex.length !== 64) return false;
  for (let word = 0; word < 8; word++) {
    let value = 0;
    for (let index = word * 8; index < word * 8 + 8; index++) {
      const code = hex.charCodeAt(index);
      const digit = code < 128 ? hexValue[code]! : -1;
      if (digit < 0) return false;
      value = value * 16 + digit;
    }
    scratch[word] = value;
  }
  return true;
}

/** The key's eight 32-bit words: its own when it is SHA-256 hex, else its SHA-256's. */
function wordsOf(key: string): Uint32Array {
  if (!readWords(key)) readWords(createHash('sha256').update(key).digest('hex'));
  return scratch;
}
