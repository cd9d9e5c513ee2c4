/**
 * Cleaning of archive entry names into root-relative paths, the first line of defence against traversal:
 * absolute names are taken relative to the layer root (as Docker does), `.` and empty components vanish, `..`
 * that stays inside is folded, and any `..` that would climb above the root is refused.
 * @module
 */
import { InvalidArchiveError } from '../errors';

/** Longest cleaned path accepted (PATH_MAX minus room for the root prefix). */
export const MAX_PATH_BYTES = 4000;

/**
 * Cleans an entry name to a relative path without leading/trailing slashes ('' is the root itself).
 * Throws InvalidArchiveError for names that climb out of the root, hold NUL bytes, or exceed `maxDepth`
 * components / {@link MAX_PATH_BYTES} bytes. The error names `name`, or `entry` when given (a hardlink target is
 * cleaned on behalf of its entry: the error names the entry and quotes the target in its message).
 */
export function cleanEntryPath(name: string, maxDepth: number, what = 'entry', entry?: string): string {
  const fail = (message: string): never => {
    const shown = name.length > 200 ? name.slice(0, 200) : name;
    if (entry === undefined) throw new InvalidArchiveError(message, shown);
    throw new InvalidArchiveError(`${message} (${JSON.stringify(shown)})`, entry);
  };
  if (name.includes('\0')) fail(`NUL byte in ${what} name`);
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) fail(`${what} name escapes the layer root`);
      out.pop();
      continue;
    }
    out.push(part);
    if (out.length > maxDepth) fail(`${what} is nested deeper than ${maxDepth} levels`);
  }
  const p = out.join('/');
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) fail(`${what} name longer than ${MAX_PATH_BYTES} bytes`);
  return p;
}

/** Parent of a cleaned path ('' for top-level entries and for the root). */
export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

/** Last component of a cleaned path. */
export function baseOf(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** Joins a cleaned directory path and a name. */
export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}
