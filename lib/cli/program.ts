/**
 * The `graphdriver` command line: global options and every command group, on commander.
 * @module
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command } from 'commander';

import type { RunState } from './command';
import { registerContainerCommands } from './commands/containers';
import { registerImageCommands } from './commands/images';
import { registerInfoCommands } from './commands/info';
import { registerLayerCommands } from './commands/layers';
import { registerTransferCommands } from './commands/transfer';
import type { CliContext } from './context';
import { collect, defaultRoot } from './options';

/** The package version, read from package.json next to lib/ or dist/ ('unknown' when it is not there). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
    return pkg.name === 'graphdriver' && typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Builds the program for one run. Usage errors are thrown as commander errors (never `process.exit`), and
 * commander's own messages go to `errors` so that the caller can print them in its format.
 */
export function buildProgram(ctx: CliContext, state: RunState, errors: { text: string }): Command {
  const program = new Command('graphdriver');
  program
    .description("Docker's layered image storage without a daemon: images, layers and containers on overlay2, btrfs or vfs")
    .version(packageVersion(), '-v, --version', 'print the version')
    .exitOverride()
    .allowExcessArguments(false)
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => ctx.io.stdout.write(s),
      writeErr: (s) => ctx.io.stderr.write(s),
      outputError: (s) => {
        errors.text += s;
      },
    })
    .option('--root <dir>', `store root (default: ${defaultRoot(ctx)})`)
    .option('--driver <name>', 'storage driver: overlay2, btrfs or vfs (default: the one holding state, else the first that works)')
    .option('--storage-opt <key=value>', 'driver option, e.g. overlay2.size=10G (repeatable)', collect)
    .option('--lock-timeout <seconds>', 'wait this long for another graphdriver process using the store (default: fail at once)')
    .option('--json', 'machine-readable output: one JSON document on stdout, errors as JSON on stderr')
    .addHelpText(
      'after',
      '\nExit status: 0 success, 1 the operation failed, 2 the command line is wrong.\nRun `graphdriver <command> --help` for the options of a command.',
    );
  registerInfoCommands(program, ctx, state);
  registerTransferCommands(program, ctx, state);
  registerImageCommands(program, ctx, state);
  registerLayerCommands(program, ctx, state);
  registerContainerCommands(program, ctx, state);
  return program;
}
