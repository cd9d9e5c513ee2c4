/**
 * Driver errors with stable codes.
 * @module
 */
import { GraphdriverError } from '../errors';

/**
 * The driver cannot run here (missing kernel support or tools); the registry tries the next one.
 *
 * @example
 * ```ts
 * import { newDriver, NotSupportedError, type Driver } from 'graphdriver';
 *
 * let driver: Driver;
 * try {
 *   driver = await newDriver({ root: '/var/lib/graphdriver', name: 'overlay2' });
 * } catch (e) {
 *   if (!(e instanceof NotSupportedError)) throw e; // e.code === 'ERR_DRIVER_NOT_SUPPORTED'
 *   driver = await newDriver({ root: '/var/lib/graphdriver', name: 'vfs' }); // works anywhere
 * }
 * ```
 */
export class NotSupportedError extends GraphdriverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_DRIVER_NOT_SUPPORTED', message, options);
  }
}

/**
 * A prerequisite of the driver is missing (e.g. the home is not on btrfs).
 *
 * @example
 * ```ts
 * import { BtrfsDriver, PrerequisitesError } from 'graphdriver';
 *
 * try {
 *   await BtrfsDriver.init('/var/lib/graphdriver/btrfs');
 * } catch (e) {
 *   if (!(e instanceof PrerequisitesError)) throw e; // e.code === 'ERR_DRIVER_NOT_SUPPORTED'
 *   console.error(e.message); // e.g. btrfs: /var/lib/graphdriver is not on a btrfs filesystem
 * }
 * ```
 */
export class PrerequisitesError extends NotSupportedError {}

/**
 * The backing filesystem cannot host this driver (e.g. overlay on a filesystem without d_type).
 *
 * @example
 * ```ts
 * import { IncompatibleFsError, Overlay2Driver } from 'graphdriver';
 *
 * try {
 *   await Overlay2Driver.init('/var/lib/graphdriver/overlay2');
 * } catch (e) {
 *   if (!(e instanceof IncompatibleFsError)) throw e; // e.code === 'ERR_DRIVER_NOT_SUPPORTED'
 *   console.error(e.message); // e.g. the backing filesystem has no d_type support
 * }
 * ```
 */
export class IncompatibleFsError extends NotSupportedError {}

/**
 * No layer with this id.
 *
 * @example
 * ```ts
 * import { LayerNotFoundError, newDriver } from 'graphdriver';
 *
 * const driver = await newDriver({ root: '/var/lib/graphdriver' });
 * try {
 *   await driver.get('no-such-layer');
 * } catch (e) {
 *   if (!(e instanceof LayerNotFoundError)) throw e; // e.code === 'ERR_LAYER_NOT_FOUND'
 *   console.error(`${e.id} does not exist`);
 * }
 * ```
 */
export class LayerNotFoundError extends GraphdriverError {
  constructor(readonly id: string) {
    super('ERR_LAYER_NOT_FOUND', `layer ${JSON.stringify(id)} does not exist`);
  }
}

/**
 * A layer with this id already exists.
 *
 * @example
 * ```ts
 * import { LayerExistsError, newDriver } from 'graphdriver';
 *
 * const driver = await newDriver({ root: '/var/lib/graphdriver' });
 * try {
 *   await driver.create('base', null);
 * } catch (e) {
 *   if (!(e instanceof LayerExistsError)) throw e; // e.code === 'ERR_LAYER_EXISTS'
 *   // created by an earlier run: use it as it is
 * }
 * ```
 */
export class LayerExistsError extends GraphdriverError {
  constructor(readonly id: string) {
    super('ERR_LAYER_EXISTS', `layer ${JSON.stringify(id)} already exists`);
  }
}

/**
 * The layer is mounted or has children and cannot be removed.
 *
 * @example
 * ```ts
 * import { LayerInUseError, newDriver } from 'graphdriver';
 *
 * const driver = await newDriver({ root: '/var/lib/graphdriver' });
 * const rootfs = await driver.get('c1');
 * try {
 *   await driver.remove('c1'); // refused: c1 is mounted
 * } catch (e) {
 *   if (!(e instanceof LayerInUseError)) throw e; // e.code === 'ERR_LAYER_IN_USE'
 *   await driver.put('c1');
 *   await driver.remove('c1');
 * }
 * ```
 */
export class LayerInUseError extends GraphdriverError {
  constructor(readonly id: string, why: string) {
    super('ERR_LAYER_IN_USE', `layer ${JSON.stringify(id)} is in use: ${why}`);
  }
}

/**
 * An id that is not a safe layer identifier.
 *
 * @example
 * ```ts
 * import { InvalidIdError, newDriver } from 'graphdriver';
 *
 * const driver = await newDriver({ root: '/var/lib/graphdriver' });
 * try {
 *   await driver.create('../../etc', null); // never reaches the filesystem
 * } catch (e) {
 *   if (!(e instanceof InvalidIdError)) throw e; // e.code === 'ERR_INVALID_ID'
 *   console.error(e.message); // use 1-128 characters of [A-Za-z0-9_.-], ...
 * }
 * ```
 */
export class InvalidIdError extends GraphdriverError {
  constructor(readonly id: unknown) {
    super('ERR_INVALID_ID', `invalid layer id ${typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : typeof id}: use 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'`);
  }
}

/**
 * A --storage-opt string the driver does not understand or cannot accept.
 *
 * @example
 * ```ts
 * import { InvalidOptionError, newDriver } from 'graphdriver';
 *
 * try {
 *   await newDriver({ root: '/var/lib/graphdriver', name: 'vfs', options: ['vfs.nosuch=1'] });
 * } catch (e) {
 *   if (!(e instanceof InvalidOptionError)) throw e; // e.code === 'ERR_INVALID_OPTION'
 *   console.error(e.message); // names the option and the ones the driver knows
 * }
 * ```
 */
export class InvalidOptionError extends GraphdriverError {
  constructor(message: string) {
    super('ERR_INVALID_OPTION', message);
  }
}

/**
 * {@link ProtoDriver.put} without a matching get.
 *
 * @example
 * ```ts
 * import { newDriver, NotMountedError } from 'graphdriver';
 *
 * const driver = await newDriver({ root: '/var/lib/graphdriver' });
 * try {
 *   await driver.put('c1'); // no get('c1') before it
 * } catch (e) {
 *   if (!(e instanceof NotMountedError)) throw e; // e.code === 'ERR_NOT_MOUNTED'
 *   console.error(`${e.id} was not mounted: unbalanced get/put`);
 * }
 * ```
 */
export class NotMountedError extends GraphdriverError {
  constructor(readonly id: string) {
    super('ERR_NOT_MOUNTED', `layer ${JSON.stringify(id)} is not mounted (put without get)`);
  }
}
