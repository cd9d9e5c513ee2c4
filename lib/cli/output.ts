/**
 * What the `graphdriver` command prints: aligned tables and Docker's units for people, one JSON document on
 * stdout for `--json`.
 * @module
 */
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { changeKindLetter, type Change } from '../archive/change';
import { familiarName, familiarString, parseReference } from '../image/reference';

/** Decimal units, as Docker prints image sizes (units.HumanSize). */
const DECIMAL_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];

/**
 * Docker's units.HumanSizeWithPrecision: `512B`, `1.23kB`, `45.7MB` (powers of 1000, `precision` significant
 * digits, trailing zeros dropped). A value that rounds up to 1000 moves to the next unit instead of Go's `1e+03`.
 */
export function humanSize(bytes: number, precision = 3): string {
  if (!Number.isFinite(bytes) || bytes < 0) return 'N/A';
  let size = bytes;
  let i = 0;
  while (i < DECIMAL_UNITS.length - 1 && Number(size.toPrecision(precision)) >= 1000) {
    size /= 1000;
    i++;
  }
  return `${Number(size.toPrecision(precision))}${DECIMAL_UNITS[i]}`;
}

/** Docker's units.HumanDuration: `Less than a second`, `About a minute`, `3 hours`, `2 weeks`, ... */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(ms / 3_600_000 / 24 / 365)} years`;
}

/** `3 hours ago` for an RFC 3339 time; `N/A` when missing or unreadable. */
export function createdAgo(time: string | undefined, now: Date): string {
  if (time === undefined) return 'N/A';
  const t = Date.parse(time);
  if (Number.isNaN(t) || t <= 0) return 'N/A';
  return `${humanDuration(Math.max(0, now.getTime() - t))} ago`;
}

/** The 12-character short form of an id (`sha256:` dropped), as Docker lists ids. */
export function shortId(id: string): string {
  const hex = id.startsWith('sha256:') ? id.slice(7) : id;
  return hex.slice(0, 12);
}

/** An id for display: short unless `full`. */
export function showId(id: string, full: boolean): string {
  return full ? id : shortId(id);
}

/** A stored (normalised) reference as Docker shows it: `busybox:latest`, `quay.io/x/y:1`. */
export function familiarRef(ref: string): string {
  try {
    return familiarString(parseReference(ref));
  } catch {
    return ref;
  }
}

/** Repository and tag columns of a reference (`<none>` when it has only a digest). */
export function repoTag(ref: string): { repository: string; tag: string; digest?: string } {
  try {
    const r = parseReference(ref);
    const out: { repository: string; tag: string; digest?: string } = { repository: familiarName(r), tag: r.tag ?? '<none>' };
    if (r.digest !== undefined) out.digest = r.digest;
    return out;
  } catch {
    return { repository: ref, tag: '<none>' };
  }
}

/**
 * Columns aligned like Go's tabwriter with Docker's settings (3 spaces of padding); the last column is not
 * padded, so lines carry no trailing blanks.
 */
export function formatTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  return all
    .map((r) =>
      header
        .map((_, c) => {
          const cell = r[c] ?? '';
          return c === header.length - 1 ? cell : cell.padEnd(widths[c]! + 3);
        })
        .join('')
        .trimEnd(),
    )
    .map((l) => `${l}\n`)
    .join('');
}

/** `A /path`, `C /path`, `D /path`: one line per change, as `docker diff` prints them. */
export function formatChanges(changes: readonly Change[]): string {
  return changes.map((c) => `${changeKindLetter(c.kind)} ${c.path}\n`).join('');
}

/** Changes for --json: `{ "path": "/etc", "kind": "C" }`. */
export function changesJson(changes: readonly Change[]): Array<{ path: string; kind: 'A' | 'C' | 'D' }> {
  return changes.map((c) => ({ path: c.path, kind: changeKindLetter(c.kind) }));
}

/** One JSON document, indented, with a final newline. */
export function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Writes and resolves once the data is handed to the OS (so the process does not exit with output pending). */
export function write(stream: Writable, text: string | Buffer): Promise<void> {
  if (text.length === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    stream.write(text, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Copies a stream into `dest` with backpressure; resolves to the bytes copied. With `end: false` the destination
 * stays open (stdout must not be ended by a command).
 */
export async function copyStream(src: Readable | AsyncIterable<Uint8Array>, dest: Writable, opts: { end: boolean }): Promise<number> {
  let bytes = 0;
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const chunk of src) {
      const c = chunk as Uint8Array;
      bytes += c.length;
      yield c;
    }
  }
  await pipeline(counted, dest, { end: opts.end });
  return bytes;
}

/** Output of one command run: results on stdout (text or JSON), notes on stderr (none under --json). */
export class Output {
  constructor(
    readonly stdout: Writable,
    readonly stderr: Writable,
    /** Machine output requested. */
    readonly json: boolean,
  ) {}

  /** Prints the command's result: `human()` for people, `machine()` as JSON. */
  async result(human: () => string, machine: () => unknown): Promise<void> {
    await write(this.stdout, this.json ? toJson(machine()) : human());
  }

  /** A line for people on stderr (status, warnings); silent under --json so stderr carries only errors. */
  async note(line: string): Promise<void> {
    if (!this.json) await write(this.stderr, `${line}\n`);
  }
}
