"use strict";
/**
 * Typed errors with stable codes. Native failures keep their own `code`/`errno`/`syscall`/`path` (see NativeError).
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.ArchiveLimitError = exports.InvalidArchiveError = exports.GraphdriverError = void 0;
/** Base class of every error graphdriver throws on purpose; `code` is stable and documented. */
class GraphdriverError extends Error {
    /** Stable machine-readable code, e.g. `'ERR_INVALID_ARCHIVE'`. */
    code;
    constructor(code, message, options) {
        super(message, options);
        this.code = code;
        this.name = new.target.name;
    }
}
exports.GraphdriverError = GraphdriverError;
/** A layer archive is malformed or hostile; nothing outside the target root was touched. */
class InvalidArchiveError extends GraphdriverError {
    /** The entry name (as written in the archive) that was refused, when the problem is tied to one entry. */
    entry;
    constructor(message, entry, options) {
        super('ERR_INVALID_ARCHIVE', entry === undefined ? message : `${message}: ${JSON.stringify(entry)}`, options);
        if (entry !== undefined)
            this.entry = entry;
    }
}
exports.InvalidArchiveError = InvalidArchiveError;
/** An archive exceeded a configured limit (size, entries, depth, expansion ratio). Also an invalid archive. */
class ArchiveLimitError extends InvalidArchiveError {
}
exports.ArchiveLimitError = ArchiveLimitError;
//# sourceMappingURL=errors.js.map