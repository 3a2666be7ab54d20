/**
 * One Server-Sent Event from its block of lines (the text between two blank lines, line ends made
 * `\n`): its `event` field (`message` when absent) and its `data` lines joined by `\n` (null when it
 * has none). Comment lines (`:`, the server's keep-alive pings) and other fields are skipped.
 */
export function parseSseEvent(block: string): { event: string; data: string | null } {
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return { event, data: data.length === 0 ? null : data.join('\n') };
}
