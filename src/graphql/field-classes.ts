/**
 * Root fields that cost money upstream. Over GET (an `<img>` or a link can send one) they run only
 * with a preflight-forcing header; the mutations among them are refused over GET by Yoga anyway.
 */
export const paidFields: ReadonlySet<string> = new Set(['sendMessage', 'sendTemplatedMessage', 'embedding', 'embeddings']);

/** Root query fields that show or describe the gateway's administration: keys, settings, overrides. */
export const adminQueryFields: ReadonlySet<string> = new Set(['settings', 'providers', 'apiKeys', 'overrides', 'overrideChanges']);
