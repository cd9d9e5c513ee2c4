/**
 * Typed errors with stable codes. Native failures keep their own `code`/`errno`/`syscall`/`path` (see NativeError).
 * @module
 */

/**
 * Base class of every error graphdriver throws on purpose; `code` is stable and documented.
 *
 * @example
 * ```ts
 * import { GraphdriverError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.getImage('busybox:latest');
 * } catch (e) {
 *   if (!(e instanceof GraphdriverError)) throw e;
 *   console.error(e.code, e.message); // e.g. 'ERR_IMAGE_NOT_FOUND' no such image: "busybox:latest"
 * }
 * ```
 */
export class GraphdriverError extends Error {
  /** Stable machine-readable code, e.g. `'ERR_INVALID_ARCHIVE'`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A layer archive is malformed or hostile; nothing outside the target root was touched.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { applyLayer, InvalidArchiveError } from 'graphdriver';
 *
 * try {
 *   await applyLayer('/tmp/rootfs', fs.createReadStream('layer.tar'));
 * } catch (e) {
 *   if (!(e instanceof InvalidArchiveError)) throw e; // e.code === 'ERR_INVALID_ARCHIVE'
 *   console.error(`refused ${e.entry ?? 'archive'}: ${e.message}`); // e.g. an entry named ../../etc/passwd
 * }
 * ```
 */
export class InvalidArchiveError extends GraphdriverError {
  /** The entry name (as written in the archive) that was refused, when the problem is tied to one entry. */
  readonly entry?: string;

  constructor(message: string, entry?: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARCHIVE', entry === undefined ? message : `${message}: ${JSON.stringify(entry)}`, options);
    if (entry !== undefined) this.entry = entry;
  }
}

/**
 * An archive exceeded a configured limit (size, entries, depth, expansion ratio). Also an invalid archive.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { applyLayer, ArchiveLimitError } from 'graphdriver';
 *
 * try {
 *   await applyLayer('/tmp/rootfs', fs.createReadStream('layer.tar.gz'), { maxEntries: 100_000, maxRatio: 100 });
 * } catch (e) {
 *   // code is 'ERR_INVALID_ARCHIVE': an archive over a limit is an invalid archive too
 *   if (e instanceof ArchiveLimitError && e.code === 'ERR_INVALID_ARCHIVE') console.error('layer too large:', e.message);
 *   else throw e;
 * }
 * ```
 */
export class ArchiveLimitError extends InvalidArchiveError {}
