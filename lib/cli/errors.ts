/**
 * Exit codes and error messages of the `graphdriver` command.
 *
 * - 0: the command did what was asked;
 * - 1: the operation failed (missing image, locked store, broken archive, kernel refusal, ...);
 * - 2: the command line is wrong: unknown command or option, missing or extra arguments, a value that cannot be
 *   valid (malformed reference, id or storage option), or asking to write a tar to a terminal.
 *
 * Every message tries to say what to do next; {@link diagnose} turns any thrown value into one.
 * @module
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Process exit codes. */
export const ExitCode = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
} as const;

/** One of {@link ExitCode}. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** A command line that cannot be run as written (exit code 2). */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE';

  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** An operation that failed with a message already worded for the user (exit code 1 unless told otherwise). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code = 'ERR_FAILED',
    readonly hint?: string,
    readonly exitCode: ExitCodeValue = ExitCode.FAILED,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/**
 * Some of several operations failed (e.g. `rmi a b c`): what succeeded was printed, the failures were reported
 * one by one on stderr already, and the command exits 1.
 */
export class PartialFailure extends Error {
  readonly code = 'ERR_PARTIAL_FAILURE';

  constructor(
    readonly failures: number,
    readonly total: number,
    /** The exit code of the worst failure. */
    readonly exitCode: ExitCodeValue = ExitCode.FAILED,
  ) {
    super(`${failures} of ${total} operations failed`);
    this.name = 'PartialFailure';
  }
}

/** What the user is told about a failure. */
export interface Diagnosis {
  exitCode: ExitCodeValue;
  /** Stable code (`ERR_IMAGE_NOT_FOUND`, `EACCES`, `ERR_USAGE`, ...). */
  code: string;
  /** What went wrong. */
  message: string;
  /** What to do about it, when there is something to say. */
  hint?: string;
}

/** Facts about the invocation that make messages precise. */
export interface DiagnoseContext {
  /** Store root in use. */
  root?: string;
  /** Driver asked for with --driver. */
  driver?: string;
  /** Drivers that were found to work with this root (filled in for driver failures). */
  workingDrivers?: string[];
  /** Effective uid (null when unknown). */
  uid?: number | null;
}

/** Error codes that mean the user typed a value that can never be valid: usage errors. */
const USAGE_CODES = new Set(['ERR_USAGE', 'ERR_INVALID_REFERENCE', 'ERR_INVALID_ID', 'ERR_INVALID_OPTION', 'ERR_DRIVER_UNKNOWN']);

function field(e: unknown, name: string): unknown {
  return typeof e === 'object' && e !== null ? (e as Record<string, unknown>)[name] : undefined;
}

/** The `code` of an error, when it has a string one. */
export function errorCode(e: unknown): string | undefined {
  const c = field(e, 'code');
  return typeof c === 'string' ? c : undefined;
}

function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Command line of a running process, for "locked by process N (graphdriver pull ...)"; null when unknown. */
export function processCommandLine(pid: number): string | null {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const args = raw.split('\0').filter((a) => a !== '');
    if (args.length === 0) return null;
    // `node /usr/lib/node_modules/graphdriver/dist/cli/main.js pull x` reads better as `graphdriver pull x`.
    const script = args.findIndex((a) => /(^|\/)(graphdriver|main\.js)$/.test(a));
    const shown = script >= 0 ? ['graphdriver', ...args.slice(script + 1)] : args;
    const line = shown.join(' ');
    return line.length > 120 ? `${line.slice(0, 117)}...` : line;
  } catch {
    return null;
  }
}

/**
 * Turns a thrown value into exit code, message and hint. Pure apart from reading /proc for a lock holder's
 * command line.
 */
export function diagnose(e: unknown, ctx: DiagnoseContext = {}): Diagnosis {
  if (e instanceof UsageError) {
    const d: Diagnosis = { exitCode: ExitCode.USAGE, code: e.code, message: e.message };
    if (e.hint !== undefined) d.hint = e.hint;
    return d;
  }
  if (e instanceof CliError) {
    const d: Diagnosis = { exitCode: e.exitCode, code: e.code, message: e.message };
    if (e.hint !== undefined) d.hint = e.hint;
    return d;
  }
  const code = errorCode(e) ?? 'ERR_UNEXPECTED';
  const message = messageOf(e);
  const exitCode = USAGE_CODES.has(code) ? ExitCode.USAGE : ExitCode.FAILED;
  const out = (hint?: string, msg = message): Diagnosis => (hint === undefined ? { exitCode, code, message: msg } : { exitCode, code, message: msg, hint });
  const root = ctx.root ?? 'the store root';
  switch (code) {
    case 'ERR_STORE_LOCKED': {
      const pid = field(e, 'holderPid');
      const cmd = typeof pid === 'number' ? processCommandLine(pid) : null;
      const who = typeof pid === 'number' ? `process ${pid}${cmd !== null ? ` (${cmd})` : ''}` : 'another user';
      return out(
        `wait for ${who} to finish, or stop it; add --lock-timeout <seconds> to wait for the store automatically`,
        `the store ${root} is in use by ${who}`,
      );
    }
    case 'ERR_DRIVER_NOT_SUPPORTED': {
      const working = ctx.workingDrivers;
      const which = ctx.driver !== undefined ? `the storage driver ${JSON.stringify(ctx.driver)} cannot run here` : 'no storage driver can run here';
      let hint: string;
      if (working === undefined) hint = 'choose another driver with --driver, or another --root on a filesystem that supports it';
      else if (working.length === 0) hint = `no driver works with the root ${root}; check the reasons above (running as root and a root on ext4, xfs or btrfs is what the drivers need)`;
      else hint = `drivers that work with the root ${root}: ${working.join(', ')}; choose one with --driver ${working[0]}`;
      return out(hint, `${which}: ${message}`);
    }
    case 'ERR_DRIVER_AMBIGUOUS':
      return out('pass --driver <name> to choose the driver whose state you want to use');
    case 'ERR_DRIVER_UNKNOWN':
      return out('pass one of the known drivers to --driver');
    case 'ERR_INVALID_OPTION':
      return out('check the --storage-opt / --opt values; `graphdriver info` shows the driver in use');
    case 'ERR_IMAGE_NOT_FOUND':
      return out('`graphdriver images` lists the images; `graphdriver pull`, `load` or `import` adds one');
    case 'ERR_CONTAINER_NOT_FOUND':
      return out('`graphdriver ps` lists the containers');
    case 'ERR_LAYER_NOT_FOUND':
      return out('`graphdriver layers` lists the layers');
    case 'ERR_IMAGE_IN_USE':
      return out('remove the containers using it first (`graphdriver rm`), or force with `rmi --force` (child images can never be forced)');
    case 'ERR_LAYER_IN_USE':
      return out('unmount it (`graphdriver unmount`) or remove what is built on it first');
    case 'ERR_CONTAINER_NAME_IN_USE':
      return out('choose another --name, or remove the other container with `graphdriver rm`');
    case 'ERR_AMBIGUOUS_ID':
      return out('give more characters of the id');
    case 'ERR_INVALID_REFERENCE':
      return out('references look like name[:tag] or name@sha256:<digest>, in lower case, e.g. docker.io/library/busybox:latest');
    case 'ERR_INVALID_ID':
      return out('ids are hex strings as `graphdriver ps` / `images` / `layers` print them, or container names');
    case 'ERR_INVALID_ARCHIVE':
    case 'ERR_ARCHIVE_LIMIT':
      return out('the input cannot be used as it is (a layer tar for import, a `docker save` or OCI archive for load; plain, gzip or zstd); nothing was stored', `invalid archive: ${message}`);
    case 'ERR_DIGEST_MISMATCH':
      return out('the content is corrupted (in transit or at the source); nothing was stored, retry or check the source');
    case 'ERR_INSECURE_REGISTRY':
      return out('pass --insecure to pull/push over plain HTTP if you trust the network to the registry');
    case 'ERR_REGISTRY_AUTH':
      return out('give credentials with --username and --password-stdin, or check them and your access to the repository');
    case 'ERR_MANIFEST_NOT_FOUND':
      return out('check the repository name and the tag or digest');
    case 'ERR_NO_MATCHING_PLATFORM':
      return out('choose one of the available platforms with --platform os/arch[/variant]');
    case 'ERR_REGISTRY':
      return out('check that the registry is reachable and the reference is right; transient failures were retried already');
    case 'ERR_STORE_CORRUPT':
      return out('the store metadata is damaged; back it up, then repair it with Storage.verify({ repair: true })');
    case 'ERR_NOT_MOUNTED':
      return out('the container is not mounted');
    case 'ENOENT': {
      const p = field(e, 'path');
      return out(undefined, typeof p === 'string' ? `no such file or directory: ${p}` : message);
    }
    case 'EACCES':
    case 'EPERM': {
      const p = field(e, 'path');
      const notRoot = ctx.uid !== undefined && ctx.uid !== null && ctx.uid !== 0;
      const hint = notRoot
        ? 'most drivers need root (mounts, device nodes, ownership): run as root, or use a --root you own with --driver vfs'
        : 'check the permissions of the store root and the files given';
      return out(hint, typeof p === 'string' ? `permission denied: ${p} (${message})` : message);
    }
    case 'ENOSPC':
      return out(`the filesystem of ${root} is full; free space or use another --root`);
    case 'EDQUOT':
      return out('a disk quota was exceeded');
    case 'ABORT_ERR':
    case 'ERR_ABORTED':
      return out(undefined, 'interrupted');
    default:
      // Node 20's libuv has no name for EDQUOT (errno -122).
      if (field(e, 'errno') === -122) return { exitCode, code: 'EDQUOT', message, hint: 'a disk quota was exceeded' };
      return out();
  }
}

/** The lines printed on stderr for a diagnosis (`graphdriver: error: ...` then `hint: ...`). */
export function formatDiagnosis(d: Diagnosis): string {
  return `graphdriver: error: ${d.message}\n` + (d.hint !== undefined ? `hint: ${d.hint}\n` : '');
}

/** The JSON document printed on stderr for a diagnosis under --json. */
export function jsonDiagnosis(d: Diagnosis): string {
  const error: Record<string, unknown> = { code: d.code, message: d.message, exitCode: d.exitCode };
  if (d.hint !== undefined) error.hint = d.hint;
  return `${JSON.stringify({ error })}\n`;
}

/** Whether `dir` or anything below it is a mount point (so it must not be deleted recursively). */
export function hasMountsBelow(dir: string): boolean {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    return false;
  }
  let table: string;
  try {
    table = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return true; // unknown: assume the worst
  }
  return table.split('\n').some((l) => {
    const mp = (l.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    return mp === real || mp.startsWith(`${real}${path.sep}`);
  });
}
