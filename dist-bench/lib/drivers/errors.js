"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.NotMountedError = exports.InvalidOptionError = exports.InvalidIdError = exports.LayerInUseError = exports.LayerExistsError = exports.LayerNotFoundError = exports.IncompatibleFsError = exports.PrerequisitesError = exports.NotSupportedError = void 0;
/**
 * Driver errors with stable codes.
 * @module
 */
const errors_1 = require("../errors");
/** The driver cannot run here (missing kernel support or tools); the registry tries the next one. */
class NotSupportedError extends errors_1.GraphdriverError {
    constructor(message, options) {
        super('ERR_DRIVER_NOT_SUPPORTED', message, options);
    }
}
exports.NotSupportedError = NotSupportedError;
/** A prerequisite of the driver is missing (e.g. the home is not on btrfs). */
class PrerequisitesError extends NotSupportedError {
}
exports.PrerequisitesError = PrerequisitesError;
/** The backing filesystem cannot host this driver (e.g. overlay on a filesystem without d_type). */
class IncompatibleFsError extends NotSupportedError {
}
exports.IncompatibleFsError = IncompatibleFsError;
/** No layer with this id. */
class LayerNotFoundError extends errors_1.GraphdriverError {
    id;
    constructor(id) {
        super('ERR_LAYER_NOT_FOUND', `layer ${JSON.stringify(id)} does not exist`);
        this.id = id;
    }
}
exports.LayerNotFoundError = LayerNotFoundError;
/** A layer with this id already exists. */
class LayerExistsError extends errors_1.GraphdriverError {
    id;
    constructor(id) {
        super('ERR_LAYER_EXISTS', `layer ${JSON.stringify(id)} already exists`);
        this.id = id;
    }
}
exports.LayerExistsError = LayerExistsError;
/** The layer is mounted or has children and cannot be removed. */
class LayerInUseError extends errors_1.GraphdriverError {
    id;
    constructor(id, why) {
        super('ERR_LAYER_IN_USE', `layer ${JSON.stringify(id)} is in use: ${why}`);
        this.id = id;
    }
}
exports.LayerInUseError = LayerInUseError;
/** An id that is not a safe layer identifier. */
class InvalidIdError extends errors_1.GraphdriverError {
    id;
    constructor(id) {
        super('ERR_INVALID_ID', `invalid layer id ${typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : typeof id}: use 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'`);
        this.id = id;
    }
}
exports.InvalidIdError = InvalidIdError;
/** A --storage-opt string the driver does not understand or cannot accept. */
class InvalidOptionError extends errors_1.GraphdriverError {
    constructor(message) {
        super('ERR_INVALID_OPTION', message);
    }
}
exports.InvalidOptionError = InvalidOptionError;
/** {@link ProtoDriver.put} without a matching get. */
class NotMountedError extends errors_1.GraphdriverError {
    id;
    constructor(id) {
        super('ERR_NOT_MOUNTED', `layer ${JSON.stringify(id)} is not mounted (put without get)`);
        this.id = id;
    }
}
exports.NotMountedError = NotMountedError;
//# sourceMappingURL=errors.js.map