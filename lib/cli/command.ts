/**
 * Plumbing shared by the command groups: resolving the global options, opening the store once per run, typed
 * access to commander's positional arguments, and per-item failures for commands taking several names.
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import type { Command } from 'commander';

import type { CliContext, CliStorage } from './context';
import { diagnose, formatDiagnosis, jsonDiagnosis, PartialFailure, UsageError, type ExitCodeValue } from './errors';
import { resolveGlobals, type GlobalOptions, type RawGlobals } from './options';
import { copyStream, Output, write } from './output';

/** What the run learned so far; read by the error reporting in main. */
export interface RunState {
  globals?: GlobalOptions;
}

/** What a command's action receives. */
export interface CommandEnv {
  ctx: CliContext;
  globals: GlobalOptions;
  out: Output;
  /** The store, opened on first use. */
  store(): Promise<CliStorage>;
}

/** Declared positional arguments (strings, string arrays for variadic ones, undefined when optional and absent). */
export type Positional = string | string[] | undefined;

/** Option values of the command itself. */
export type OptionValues = Record<string, unknown>;

/** A command action. */
export type Action = (env: CommandEnv, args: Positional[], opts: OptionValues) => Promise<void>;

/** Wraps an action for commander: commander passes the positionals, then the options, then the command. */
export function handler(ctx: CliContext, state: RunState, fn: Action): (...all: unknown[]) => Promise<void> {
  return async (...all: unknown[]) => {
    const cmd = all[all.length - 1] as Command;
    const opts = all[all.length - 2] as OptionValues;
    const args = all.slice(0, -2) as Positional[];
    const globals = resolveGlobals(cmd.optsWithGlobals() as RawGlobals, ctx);
    state.globals = globals;
    const out = new Output(ctx.io.stdout, ctx.io.stderr, globals.json);
    let opened: Promise<CliStorage> | null = null;
    const env: CommandEnv = {
      ctx,
      globals,
      out,
      store: () => {
        opened ??= ctx.openStorage(globals, (m) => ctx.io.stderr.write(`graphdriver: warning: ${m}\n`));
        return opened;
      },
    };
    try {
      await fn(env, args, opts);
    } finally {
      // Release the store lock now rather than at exit, but keep `graphdriver mount`'s mounts for the user.
      const s = opened ? await (opened as Promise<CliStorage>).catch(() => null) : null;
      await s?.close?.({ keepMounts: true }).catch((e: unknown) => ctx.io.stderr.write(`graphdriver: warning: closing the store: ${String(e)}\n`));
    }
  };
}

/** A required single positional. */
export function arg(args: Positional[], i: number): string {
  const v = args[i];
  if (typeof v !== 'string') throw new TypeError(`argument ${i} is not a string`);
  return v;
}

/** An optional single positional. */
export function optArg(args: Positional[], i: number): string | undefined {
  const v = args[i];
  return typeof v === 'string' ? v : undefined;
}

/** A variadic positional. */
export function listArg(args: Positional[], i: number): string[] {
  const v = args[i];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

/** A string option value. */
export function strOpt(opts: OptionValues, name: string): string | undefined {
  const v = opts[name];
  return typeof v === 'string' ? v : undefined;
}

/** A boolean option value. */
export function boolOpt(opts: OptionValues, name: string): boolean {
  return opts[name] === true;
}

/** A repeatable option's values. */
export function listOpt(opts: OptionValues, name: string): string[] {
  const v = opts[name];
  return Array.isArray(v) ? v.map(String) : [];
}

/**
 * Runs `fn` for each item, reporting a failing item on stderr and going on with the next (as `docker rmi a b`);
 * throws {@link PartialFailure} at the end when any failed.
 */
export async function forEachItem<T>(env: CommandEnv, items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  let failures = 0;
  let worst: ExitCodeValue = 1;
  for (const item of items) {
    try {
      await fn(item);
    } catch (e) {
      failures++;
      const d = diagnose(e, { root: env.globals.root, uid: env.ctx.uid });
      if (d.exitCode > worst) worst = d.exitCode;
      await write(env.ctx.io.stderr, env.globals.json ? jsonDiagnosis(d) : formatDiagnosis(d));
    }
  }
  if (failures > 0) throw new PartialFailure(failures, items.length, worst);
}

/** Refuses to write a tar to a terminal, as `docker save` and `docker export` do. */
export function checkTarDestination(ctx: CliContext, output: string | undefined): void {
  if (output === undefined && ctx.io.stdout.isTTY === true) {
    throw new UsageError('refusing to write a tar archive to a terminal', 'use -o <file>, or redirect stdout to a file or a pipe');
  }
}

/** A temp name next to `file` (same directory, so a rename replaces the file atomically). */
export function tempSibling(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * Writes a tar stream to stdout, or to `output` through a temp file renamed into place (a failure leaves no
 * half-written file and an existing one untouched); resolves to the bytes written.
 */
export async function writeTar(ctx: CliContext, src: Readable, output: string | undefined): Promise<number> {
  if (output === undefined) return copyStream(src, ctx.io.stdout, { end: false });
  const file = path.resolve(ctx.cwd, output);
  const tmp = tempSibling(file);
  try {
    const n = await copyStream(src, fs.createWriteStream(tmp, { flags: 'wx', mode: 0o644 }), { end: true });
    await fs.promises.rename(tmp, file);
    return n;
  } catch (e) {
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw e;
  }
}
