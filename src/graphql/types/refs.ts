import type { CacheEntryView } from '../../analytics/cache-entries.ts';
import type { CallView } from '../../analytics/calls.ts';
import { builder } from '../builder.ts';

// Types that refer to each other (a call's cache entry, an entry's calls) are declared here and
// implemented in their own domain files, so no two type files import each other.
export const LlmCall = builder.objectRef<CallView>('LlmCall');
export const CacheEntry = builder.objectRef<CacheEntryView>('CacheEntry');
