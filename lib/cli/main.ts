#!/usr/bin/env node
/**
 * Entry point of the `graphdriver` command (package.json `bin`). {@link run} is the whole command as a function
 * of its arguments and context, so tests can drive it in-process; the process entry below only wires it to the
 * real process and sets the exit status.
 * @module
 */
import { CommanderError } from 'commander';

import type { RunState } from './command';
import { processContext, type CliContext } from './context';
import { diagnose, errorCode, ExitCode, formatDiagnosis, jsonDiagnosis, PartialFailure, type Diagnosis } from './errors';
import { write } from './output';
import { buildProgram } from './program';

/** Whether `--json` appears among the global arguments (for errors raised before options are parsed). */
function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}

/** Runs one command line; resolves to the exit status (0 ok, 1 failed, 2 usage). Never throws. */
export async function run(argv: readonly string[], overrides: Partial<CliContext> = {}): Promise<number> {
  const ctx: CliContext = { ...processContext(), ...overrides };
  const state: RunState = {};
  const commanderErrors = { text: '' };
  const program = buildProgram(ctx, state, commanderErrors);
  // Write failures reach the command through write callbacks and pipelines; the 'error' event that streams emit
  // as well must not become an uncaught exception (EPIPE when the reader of stdout goes away).
  const ignore = (): void => undefined;
  ctx.io.stdout.on('error', ignore);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ExitCode.OK;
  } catch (e) {
    return report(e, argv, ctx, state, commanderErrors.text);
  } finally {
    ctx.io.stdout.off('error', ignore);
  }
}

async function report(e: unknown, argv: readonly string[], ctx: CliContext, state: RunState, commanderText: string): Promise<number> {
  const json = state.globals?.json ?? wantsJson(argv);
  const stderr = ctx.io.stderr;
  try {
    if (e instanceof CommanderError) {
      // --help and --version end with exit code 0; everything else commander refuses is a usage error.
      if (e.exitCode === 0) return ExitCode.OK;
      const message = (commanderText || e.message).trim().replace(/^error: /, '');
      const d: Diagnosis = { exitCode: ExitCode.USAGE, code: 'ERR_USAGE', message, hint: 'run `graphdriver --help` or `graphdriver <command> --help` for usage' };
      if (e.code === 'commander.help') d.message = 'no command given';
      await write(stderr, json ? jsonDiagnosis(d) : formatDiagnosis(d));
      return ExitCode.USAGE;
    }
    // Each failure was reported as it happened.
    if (e instanceof PartialFailure) return e.exitCode;
    // The reader of stdout went away (`graphdriver images | head -1`): nothing left to say to anyone.
    if (errorCode(e) === 'EPIPE') return ExitCode.OK;
    const g = state.globals;
    const diagCtx: Parameters<typeof diagnose>[1] = { uid: ctx.uid };
    if (g !== undefined) {
      diagCtx.root = g.root;
      if (g.driver !== undefined) diagCtx.driver = g.driver;
      if (errorCode(e) === 'ERR_DRIVER_NOT_SUPPORTED') diagCtx.workingDrivers = await ctx.probeDrivers(g.root).catch(() => []);
    }
    const d = diagnose(e, diagCtx);
    if (d.code === 'ERR_UNEXPECTED' && e instanceof Error && e.stack !== undefined && ctx.env.GRAPHDRIVER_DEBUG) d.message += `\n${e.stack}`;
    await write(stderr, json ? jsonDiagnosis(d) : formatDiagnosis(d));
    return d.exitCode;
  } catch {
    // stderr itself failed: the exit status is all that is left.
    return ExitCode.FAILED;
  }
}

if (require.main === module) {
  void run(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
