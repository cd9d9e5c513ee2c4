/**
 * Global options of the `graphdriver` command and the parsing of option values shared by several commands.
 * @module
 */
import * as path from 'node:path';

import { UsageError } from './errors';

/** Options every command understands (given before or after the command name). */
export interface GlobalOptions {
  /** Absolute store root. */
  root: string;
  /** Driver asked for, when one was. */
  driver?: string;
  /** Driver options (`--storage-opt key=value`, repeatable), in the order given. */
  storageOpts: string[];
  /** Machine-readable output on stdout (and errors as JSON on stderr). */
  json: boolean;
  /** How long to wait for another process holding the store, in ms. */
  lockTimeoutMs: number;
}

/** Where the process runs, for the defaults. */
export interface Environment {
  env: NodeJS.ProcessEnv;
  /** Effective uid, null when the platform has none. */
  uid: number | null;
  /** Home directory. */
  home: string;
  /** Working directory relative paths are resolved against. */
  cwd: string;
}

/**
 * The default store root: `/var/lib/graphdriver` for root (as Docker's /var/lib/docker); for other users
 * `$XDG_DATA_HOME/graphdriver`, else `~/.local/share/graphdriver` (as rootless Docker and podman do).
 */
export function defaultRoot(e: Pick<Environment, 'env' | 'uid' | 'home'>): string {
  if (e.uid === 0) return '/var/lib/graphdriver';
  const xdg = e.env.XDG_DATA_HOME;
  // The XDG spec says relative values are invalid and must be ignored.
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, 'graphdriver');
  return path.join(e.home, '.local', 'share', 'graphdriver');
}

/** Commander's collector for repeatable options. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Splits `key=value`; a usage error names the option when the form is wrong. */
export function splitKeyValue(s: string, option: string): [string, string] {
  const eq = s.indexOf('=');
  if (eq <= 0) throw new UsageError(`${option} ${JSON.stringify(s)} is not key=value`, `write it as ${option} key=value, e.g. ${option} size=10G`);
  return [s.slice(0, eq).trim(), s.slice(eq + 1).trim()];
}

/** `key=value` strings to a record (later keys win, as repeated flags do). */
export function keyValues(list: readonly string[], option: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of list) {
    const [k, v] = splitKeyValue(s, option);
    out[k] = v;
  }
  return out;
}

/** A non-negative number of seconds (for --lock-timeout), in ms. */
export function parseSeconds(s: string, option: string): number {
  if (!/^\d+(\.\d+)?$/.test(s.trim())) throw new UsageError(`${option} ${JSON.stringify(s)} is not a number of seconds`);
  const ms = Math.round(Number(s) * 1000);
  if (!Number.isSafeInteger(ms)) throw new UsageError(`${option} ${JSON.stringify(s)} is too large`);
  return ms;
}

/** A platform given as `os/arch[/variant]` (Docker's --platform). */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** Parses `linux/amd64`, `linux/arm64/v8`; a usage error otherwise. */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split('/');
  const ok = /^[a-z0-9_.-]+$/;
  if (parts.length < 2 || parts.length > 3 || !parts.every((p) => ok.test(p))) {
    throw new UsageError(`--platform ${JSON.stringify(s)} is not os/arch[/variant]`, 'e.g. --platform linux/amd64 or linux/arm64/v8');
  }
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2] !== undefined) p.variant = parts[2];
  return p;
}

/** Raw values commander collected for the global options. */
export interface RawGlobals {
  root?: unknown;
  driver?: unknown;
  storageOpt?: unknown;
  json?: unknown;
  lockTimeout?: unknown;
}

/** Checks and completes the global options. */
export function resolveGlobals(raw: RawGlobals, e: Environment): GlobalOptions {
  let root = defaultRoot(e);
  if (raw.root !== undefined) {
    if (typeof raw.root !== 'string' || raw.root.trim() === '') throw new UsageError('--root needs a directory');
    root = raw.root;
  }
  const storageOpts = Array.isArray(raw.storageOpt) ? raw.storageOpt.map(String) : [];
  // The driver reports unknown keys; the form is checked here so that a typo is a usage error before any work.
  for (const o of storageOpts) splitKeyValue(o, '--storage-opt');
  const out: GlobalOptions = {
    root: path.resolve(e.cwd, root),
    storageOpts,
    json: raw.json === true,
    lockTimeoutMs: typeof raw.lockTimeout === 'string' ? parseSeconds(raw.lockTimeout, '--lock-timeout') : 0,
  };
  if (raw.driver !== undefined) {
    if (typeof raw.driver !== 'string' || !/^[a-z0-9]+$/.test(raw.driver)) {
      throw new UsageError(`--driver ${JSON.stringify(raw.driver)} is not a driver name`, 'e.g. --driver overlay2, --driver btrfs or --driver vfs');
    }
    out.driver = raw.driver;
  }
  return out;
}
