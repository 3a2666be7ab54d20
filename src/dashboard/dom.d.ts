// The dashboard runs in a browser: its files are checked with the DOM's types (the rest of the
// repository is Node.js code; `tsc --noEmit` checks both in one program).
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />

declare module '*.css';
