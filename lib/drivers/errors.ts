/**
 * Driver errors with stable codes.
 * @module
 */
import { GraphdriverError } from '../errors';

/** The driver cannot run here (missing kernel support or tools); the registry tries the next one. */
export class NotSupportedError extends GraphdriverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_DRIVER_NOT_SUPPORTED', message, options);
  }
}

/** A prerequisite of the driver is missing (e.g. the home is not on btrfs). */
export class PrerequisitesError extends NotSupportedError {}

/** The backing filesystem cannot host this driver (e.g. overlay on a filesystem without d_type). */
export class IncompatibleFsError extends NotSupportedError {}

/** No layer with this id. */
export class LayerNotFoundError extends GraphdriverError {
  constructor(readonly id: string) {
    super('ERR_LAYER_NOT_FOUND', `layer ${JSON.stringify(id)} does not exist`);
  }
}

/** A layer with this id already exists. */
export class LayerExistsError extends GraphdriverError {
  constructor(readonly id: string) {
    super('ERR_LAYER_EXISTS', `layer ${JSON.stringify(id)} already exists`);
  }
}

/** The layer is mounted or has children and cannot be removed. */
export class LayerInUseError extends GraphdriverError {
  constructor(readonly id: string, why: string) {
    super('ERR_LAYER_IN_USE', `layer ${JSON.stringify(id)} is in use: ${why}`);
  }
}

/** An id that is not a safe layer identifier. */
export class InvalidIdError extends GraphdriverError {
  constructor(readonly id: unknown) {
    super('ERR_INVALID_ID', `invalid layer id ${typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : typeof id}: use 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'`);
  }
}

/** A --storage-opt string the driver does not understand or cannot accept. */
export class InvalidOptionError extends GraphdriverError {
  constructor(message: string) {
    super('ERR_INVALID_OPTION', message);
  }
}

/** {@link ProtoDriver.put} without a matching get. */
export class NotMountedError extends GraphdriverError {
  constructor(readonly id: string) {
    super('ERR_NOT_MOUNTED', `layer ${JSON.stringify(id)} is not mounted (put without get)`);
  }
}
