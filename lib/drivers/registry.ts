/**
 * Driver registration and selection, as Docker's graphdriver.New: a configured name wins; else a driver whose
 * home already holds state; else the first in priority order whose init does not throw NotSupportedError.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import type { NativeBindings } from '../native/types';
import type { Driver, DriverInit } from './driver';
import { NotSupportedError } from './errors';
import { GraphdriverError } from '../errors';

/** Drivers tried in this order when none is configured and none holds state. */
export const driverPriority: readonly string[] = Object.freeze(['overlay2', 'btrfs', 'aufs', 'devicemapper', 'vfs']);

const drivers = new Map<string, DriverInit>();

/** Registers (or replaces) a driver constructor under `name`. */
export function registerDriver(name: string, init: DriverInit): void {
  if (!/^[a-z0-9]+$/.test(name)) throw new TypeError(`invalid driver name ${JSON.stringify(name)}`);
  drivers.set(name, init);
}

/** Names of registered drivers. */
export function registeredDrivers(): string[] {
  return [...drivers.keys()];
}

/** Configuration of {@link newDriver}. */
export interface NewDriverConfig {
  /** Driver to use; when omitted one is picked. */
  name?: string;
  /** Storage root: each driver's home is `<root>/<name>`. */
  root: string;
  /** Docker `--storage-opt` strings for the driver. */
  options?: string[];
  /** Native bindings (default: the real addon). */
  bindings?: NativeBindings;
}

async function hasState(home: string): Promise<boolean> {
  try {
    const entries = await fs.readdir(home);
    return entries.length > 0;
  } catch {
    return false;
  }
}

/** Creates the driver per Docker's selection rules (see module doc). */
export async function newDriver(cfg: NewDriverConfig): Promise<Driver> {
  const deps = cfg.bindings ? { bindings: cfg.bindings } : {};
  const options = cfg.options ?? [];
  const init = (name: string): Promise<Driver> => {
    const fn = drivers.get(name);
    if (!fn) throw new GraphdriverError('ERR_DRIVER_UNKNOWN', `unknown storage driver ${JSON.stringify(name)} (known: ${registeredDrivers().join(', ')})`);
    return fn(path.join(cfg.root, name), options, deps);
  };
  if (cfg.name !== undefined && cfg.name !== '') return init(cfg.name);

  const known = [...new Set([...driverPriority, ...drivers.keys()])].filter((n) => drivers.has(n));
  const withState: string[] = [];
  for (const name of known) if (await hasState(path.join(cfg.root, name))) withState.push(name);
  if (withState.length > 1) {
    throw new GraphdriverError(
      'ERR_DRIVER_AMBIGUOUS',
      `${cfg.root} holds state of several storage drivers (${withState.join(', ')}); choose one explicitly or remove the others`,
    );
  }
  if (withState.length === 1) return init(withState[0]!);

  const reasons: string[] = [];
  for (const name of known) {
    try {
      return await init(name);
    } catch (e) {
      if (e instanceof NotSupportedError) {
        reasons.push(`${name}: ${e.message}`);
        continue;
      }
      throw e;
    }
  }
  throw new NotSupportedError(`no storage driver is supported here (${reasons.join('; ')})`);
}
