/**
 * Typed errors with stable codes. Native failures keep their own `code`/`errno`/`syscall`/`path` (see NativeError).
 * @module
 */

/** Base class of every error graphdriver throws on purpose; `code` is stable and documented. */
export class GraphdriverError extends Error {
  /** Stable machine-readable code, e.g. `'ERR_INVALID_ARCHIVE'`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A layer archive is malformed or hostile; nothing outside the target root was touched. */
export class InvalidArchiveError extends GraphdriverError {
  /** The entry name (as written in the archive) that was refused, when the problem is tied to one entry. */
  readonly entry?: string;

  constructor(message: string, entry?: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARCHIVE', entry === undefined ? message : `${message}: ${JSON.stringify(entry)}`, options);
    if (entry !== undefined) this.entry = entry;
  }
}

/** An archive exceeded a configured limit (size, entries, depth, expansion ratio). Also an invalid archive. */
export class ArchiveLimitError extends InvalidArchiveError {}
