/**
 * Opening the store for a command, and finding out which drivers work when the requested one does not.
 *
 * The CLI closes the store with `keepMounts` (see lib/cli/command.ts): a plain close puts the driver's mounts away
 * (overlay2's cleanup unmounts everything below its home), and `graphdriver mount` must leave the container
 * mounted for the user after the process exits, as must every later command.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { driverPriority, newDriver, registeredDrivers } from '../drivers/registry';
// Registers the built-in drivers.
import '../drivers';
import { Storage, type StorageOptions } from '../storage/storage';
import type { CliStorage } from './context';
import { hasMountsBelow } from './errors';
import type { GlobalOptions } from './options';

/** Opens the store as the global options say. */
export async function openStore(g: GlobalOptions, warn: (message: string) => void): Promise<CliStorage> {
  const opts: StorageOptions = { root: g.root, driverOptions: g.storageOpts, lockTimeout: g.lockTimeoutMs, onWarning: warn };
  if (g.driver !== undefined) opts.driver = g.driver;
  return Storage.open(opts);
}

/**
 * Names of the registered drivers that initialise with a home on the same filesystem as `root` (tried in a
 * scratch directory inside it, removed afterwards), for "driver X cannot run here; Y and Z can".
 */
export async function probeWorkingDrivers(root: string): Promise<string[]> {
  let scratch: string;
  try {
    await fs.mkdir(root, { recursive: true, mode: 0o711 });
    scratch = await fs.mkdtemp(path.join(root, '.driver-probe-'));
  } catch {
    return [];
  }
  const ok: string[] = [];
  try {
    const rank = (n: string): number => (driverPriority.includes(n) ? driverPriority.indexOf(n) : driverPriority.length);
    for (const name of registeredDrivers().sort((a, b) => rank(a) - rank(b))) {
      try {
        const d = await newDriver({ name, root: scratch });
        ok.push(name);
        await d.cleanup().catch(() => undefined);
      } catch {
        // not usable here
      }
    }
  } finally {
    // A recursive delete would descend into anything a driver left mounted: only remove a tree without mounts.
    if (!hasMountsBelow(scratch)) await fs.rm(scratch, { recursive: true, force: true }).catch(() => undefined);
  }
  return ok;
}
