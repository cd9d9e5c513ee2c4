/**
 * Errors of the layer, image and container store, with stable codes. Layer lookups reuse the driver errors
 * ({@link LayerNotFoundError} `ERR_LAYER_NOT_FOUND`, {@link LayerInUseError} `ERR_LAYER_IN_USE`), so one code means
 * one thing across the library.
 * @module
 */
import { GraphdriverError } from '../errors';

export { LayerNotFoundError, LayerInUseError } from '../drivers/errors';

/** No image matches the reference, id or id prefix. */
export class ImageNotFoundError extends GraphdriverError {
  constructor(readonly reference: string, detail?: string) {
    super('ERR_IMAGE_NOT_FOUND', `no such image: ${JSON.stringify(reference.slice(0, 300))}${detail ? ` (${detail})` : ''}`);
  }
}

/** The image cannot be removed: a container uses it, or child images were committed from it. */
export class ImageInUseError extends GraphdriverError {
  constructor(readonly image: string, why: string) {
    super('ERR_IMAGE_IN_USE', `image ${image} is in use: ${why}`);
  }
}

/** A string that is not a valid image reference (`name[:tag][@digest]`), or a tag that cannot be set. */
export class InvalidReferenceError extends GraphdriverError {
  constructor(readonly reference: string, why: string) {
    super('ERR_INVALID_REFERENCE', `invalid reference ${JSON.stringify(reference.slice(0, 300))}: ${why}`);
  }
}

/** No container matches the id, id prefix or name. */
export class ContainerNotFoundError extends GraphdriverError {
  constructor(readonly container: string) {
    super('ERR_CONTAINER_NOT_FOUND', `no such container: ${JSON.stringify(container.slice(0, 300))}`);
  }
}

/** A container name is already taken. */
export class ContainerNameInUseError extends GraphdriverError {
  constructor(readonly containerName: string, readonly owner: string) {
    super('ERR_CONTAINER_NAME_IN_USE', `the container name ${JSON.stringify(containerName)} is already in use by container ${owner}`);
  }
}

/** Another process (or another Storage in this process) holds the store's lock file. */
export class StoreLockedError extends GraphdriverError {
  constructor(readonly lockFile: string, readonly holderPid: number | null, waitedMs: number) {
    super(
      'ERR_STORE_LOCKED',
      `the store is locked by ${holderPid === null ? 'another user' : `process ${holderPid}`} (${lockFile})` +
        (waitedMs > 0 ? `; gave up after waiting ${waitedMs} ms` : '') +
        '; close the other Storage or pass a lockTimeout to wait',
    );
  }
}

/** Content does not match the digest it is stored or announced under. */
export class DigestMismatchError extends GraphdriverError {
  constructor(readonly expected: string, readonly actual: string, what: string) {
    super('ERR_DIGEST_MISMATCH', `${what}: digest mismatch: expected ${expected}, got ${actual}`);
  }
}

/**
 * An identifier that cannot name anything in the store (not hex, path-like, wrong length). Checked before any
 * path is built from it, so such input never reaches the filesystem.
 */
export class InvalidStoreIdError extends GraphdriverError {
  constructor(readonly kind: string, readonly id: unknown) {
    super('ERR_INVALID_ID', `invalid ${kind} ${typeof id === 'string' ? JSON.stringify(id.slice(0, 100)) : typeof id}`);
  }
}

/** A short id prefix matches more than one object. */
export class AmbiguousIdError extends GraphdriverError {
  constructor(readonly kind: string, readonly prefix: string, count: number) {
    super('ERR_AMBIGUOUS_ID', `${kind} id prefix ${JSON.stringify(prefix)} matches ${count} ${kind}s`);
  }
}

/** Store metadata that cannot be read (malformed files); {@link Storage.verify} reports and repairs these. */
export class StoreCorruptError extends GraphdriverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_STORE_CORRUPT', message, options);
  }
}

/** The Storage was closed. */
export class StoreClosedError extends GraphdriverError {
  constructor() {
    super('ERR_STORE_CLOSED', 'the storage has been closed');
  }
}

/** An image configuration that is not valid JSON or lacks a usable `rootfs`. */
export class InvalidImageConfigError extends GraphdriverError {
  constructor(why: string) {
    super('ERR_INVALID_IMAGE_CONFIG', `invalid image configuration: ${why}`);
  }
}
