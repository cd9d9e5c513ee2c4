/**
 * What a command run needs from the outside world: standard streams, the environment, a way to open the store
 * and to hear Ctrl-C. The real process provides them ({@link processContext}); tests provide fakes.
 * @module
 */
import * as os from 'node:os';
import type { Readable, Writable } from 'node:stream';

import type { Storage } from '../storage/storage';
import type { Environment, GlobalOptions } from './options';
import type { ProgressStream } from './progress';

/** The part of {@link Storage} the commands use. */
export type CliStorage = Pick<
  Storage,
  | 'root'
  | 'driver'
  | 'listImages'
  | 'getImage'
  | 'importImage'
  | 'tagImage'
  | 'removeImage'
  | 'listLayers'
  | 'createContainer'
  | 'getContainer'
  | 'listContainers'
  | 'mountContainer'
  | 'unmountContainer'
  | 'containerChanges'
  | 'exportContainerDiff'
  | 'commitContainer'
  | 'removeContainer'
  | 'loadImage'
  | 'saveImage'
  | 'pullImage'
  | 'pushImage'
> & { close?: Storage['close'] };

/** Standard streams. */
export interface CliIO {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable & { isTTY?: boolean };
  stderr: ProgressStream;
}

/** Everything a run depends on. */
export interface CliContext extends Environment {
  io: CliIO;
  /** Opens the store for the global options; `warn` receives non-fatal problems. */
  openStorage(g: GlobalOptions, warn: (message: string) => void): Promise<CliStorage>;
  /** Drivers that can run with this root (asked after a driver failed, for the error message). */
  probeDrivers(root: string): Promise<string[]>;
  /** Current time (for `CREATED` columns). */
  now(): Date;
  /** Calls `cb` on Ctrl-C until the returned function is called. */
  onInterrupt(cb: () => void): () => void;
}

/** The context of the real process. */
export function processContext(): CliContext {
  return {
    env: process.env,
    uid: typeof process.geteuid === 'function' ? process.geteuid() : null,
    home: os.homedir(),
    cwd: process.cwd(),
    io: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
    // Loaded on first use: the store pulls in every driver and the registry client, which `--help`, `--version`
    // and usage errors do not need.
    openStorage: async (g, warn) => (await import('./store')).openStore(g, warn),
    probeDrivers: async (root) => (await import('./store')).probeWorkingDrivers(root),
    now: () => new Date(),
    onInterrupt: (cb) => {
      // The first signal asks the operation to stop (it then cleans up); a second one does not wait for that.
      let seen = false;
      const handler = (signal: NodeJS.Signals): void => {
        if (seen) process.exit(signal === 'SIGINT' ? 130 : 143);
        seen = true;
        cb();
      };
      process.on('SIGINT', handler);
      process.on('SIGTERM', handler);
      return () => {
        process.off('SIGINT', handler);
        process.off('SIGTERM', handler);
      };
    },
  };
}
