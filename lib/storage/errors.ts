/**
 * Errors of the layer, image and container store, with stable codes. Layer lookups reuse the driver errors
 * ({@link LayerNotFoundError} `ERR_LAYER_NOT_FOUND`, {@link LayerInUseError} `ERR_LAYER_IN_USE`), so one code means
 * one thing across the library.
 * @module
 */
import { GraphdriverError } from '../errors';

export { LayerNotFoundError, LayerInUseError } from '../drivers/errors';

/**
 * No image matches the reference, id or id prefix.
 *
 * @example
 * ```ts
 * import { ImageNotFoundError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.getImage('busybox:1.36');
 * } catch (e) {
 *   if (!(e instanceof ImageNotFoundError)) throw e; // e.code === 'ERR_IMAGE_NOT_FOUND'
 *   await store.pullImage(e.reference);
 * }
 * ```
 */
export class ImageNotFoundError extends GraphdriverError {
  constructor(readonly reference: string, detail?: string) {
    super('ERR_IMAGE_NOT_FOUND', `no such image: ${JSON.stringify(reference.slice(0, 300))}${detail ? ` (${detail})` : ''}`);
  }
}

/**
 * The image cannot be removed: a container uses it, or child images were committed from it.
 *
 * @example
 * ```ts
 * import { ImageInUseError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * const image = await store.getImage('busybox:latest');
 * try {
 *   await store.removeImage(image.id);
 * } catch (e) {
 *   if (!(e instanceof ImageInUseError)) throw e; // e.code === 'ERR_IMAGE_IN_USE'
 *   console.error(e.message); // e.g. used by container(s) ...: remove them first, or pass { force: true }
 * }
 * ```
 */
export class ImageInUseError extends GraphdriverError {
  constructor(readonly image: string, why: string) {
    super('ERR_IMAGE_IN_USE', `image ${image} is in use: ${why}`);
  }
}

/**
 * A string that is not a valid image reference (`name[:tag][@digest]`), or a tag that cannot be set.
 *
 * @example
 * ```ts
 * import { InvalidReferenceError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.tagImage('busybox:latest', 'My/App:1.0'); // repository names are lowercase
 * } catch (e) {
 *   if (!(e instanceof InvalidReferenceError)) throw e; // e.code === 'ERR_INVALID_REFERENCE'
 *   console.error(e.message);
 * }
 * ```
 */
export class InvalidReferenceError extends GraphdriverError {
  constructor(readonly reference: string, why: string) {
    super('ERR_INVALID_REFERENCE', `invalid reference ${JSON.stringify(reference.slice(0, 300))}: ${why}`);
  }
}

/**
 * No container matches the id, id prefix or name.
 *
 * @example
 * ```ts
 * import { ContainerNotFoundError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.mountContainer('web');
 * } catch (e) {
 *   if (!(e instanceof ContainerNotFoundError)) throw e; // e.code === 'ERR_CONTAINER_NOT_FOUND'
 *   console.error(`no container ${e.container}`);
 * }
 * ```
 */
export class ContainerNotFoundError extends GraphdriverError {
  constructor(readonly container: string) {
    super('ERR_CONTAINER_NOT_FOUND', `no such container: ${JSON.stringify(container.slice(0, 300))}`);
  }
}

/**
 * A container name is already taken.
 *
 * @example
 * ```ts
 * import { ContainerNameInUseError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.createContainer('busybox:latest', { name: 'web' });
 * } catch (e) {
 *   if (!(e instanceof ContainerNameInUseError)) throw e; // e.code === 'ERR_CONTAINER_NAME_IN_USE'
 *   console.error(`${e.containerName} is taken by ${e.owner}`);
 * }
 * ```
 */
export class ContainerNameInUseError extends GraphdriverError {
  constructor(readonly containerName: string, readonly owner: string) {
    super('ERR_CONTAINER_NAME_IN_USE', `the container name ${JSON.stringify(containerName)} is already in use by container ${owner}`);
  }
}

/**
 * Another process (or another Storage in this process) holds the store's lock file.
 *
 * @example
 * ```ts
 * import { Storage, StoreLockedError } from 'graphdriver';
 *
 * try {
 *   const store = await Storage.open({ root: '/var/lib/graphdriver', lockTimeout: 2000 });
 *   await store.close();
 * } catch (e) {
 *   if (!(e instanceof StoreLockedError)) throw e; // e.code === 'ERR_STORE_LOCKED'
 *   console.error(`the store is in use by process ${e.holderPid ?? '?'} (${e.lockFile})`);
 * }
 * ```
 */
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

/**
 * Content does not match the digest it is stored or announced under.
 *
 * @example
 * ```ts
 * import { DigestMismatchError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.loadImage('/tmp/app.tar'); // all or nothing: a bad digest leaves the store as it was
 * } catch (e) {
 *   if (!(e instanceof DigestMismatchError)) throw e; // e.code === 'ERR_DIGEST_MISMATCH'
 *   console.error(`corrupt archive: expected ${e.expected}, got ${e.actual}`);
 * }
 * ```
 */
export class DigestMismatchError extends GraphdriverError {
  constructor(readonly expected: string, readonly actual: string, what: string) {
    super('ERR_DIGEST_MISMATCH', `${what}: digest mismatch: expected ${expected}, got ${actual}`);
  }
}

/**
 * An identifier that cannot name anything in the store (not hex, path-like, wrong length). Checked before any
 * path is built from it, so such input never reaches the filesystem.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { InvalidStoreIdError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.createImage(fs.readFileSync('config.json'), { parent: '../../etc' }); // a parent must be a full image id
 * } catch (e) {
 *   if (!(e instanceof InvalidStoreIdError)) throw e; // e.code === 'ERR_INVALID_ID'
 *   console.error(`invalid ${e.kind}`); // 'parent image id'
 * }
 * ```
 */
export class InvalidStoreIdError extends GraphdriverError {
  constructor(readonly kind: string, readonly id: unknown) {
    super('ERR_INVALID_ID', `invalid ${kind} ${typeof id === 'string' ? JSON.stringify(id.slice(0, 100)) : typeof id}`);
  }
}

/**
 * A short id prefix matches more than one object.
 *
 * @example
 * ```ts
 * import { AmbiguousIdError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.getImage('4f'); // an id prefix, as `docker image inspect 4f`
 * } catch (e) {
 *   if (!(e instanceof AmbiguousIdError)) throw e; // e.code === 'ERR_AMBIGUOUS_ID'
 *   console.error(`${e.prefix} matches several ${e.kind}s: give more characters`);
 * }
 * ```
 */
export class AmbiguousIdError extends GraphdriverError {
  constructor(readonly kind: string, readonly prefix: string, count: number) {
    super('ERR_AMBIGUOUS_ID', `${kind} id prefix ${JSON.stringify(prefix)} matches ${count} ${kind}s`);
  }
}

/**
 * Store metadata that cannot be read (malformed files); {@link Storage.verify} reports and repairs these.
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { Storage, StoreCorruptError } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.registerLayer(fs.createReadStream('layer.tar'));
 * } catch (e) {
 *   if (!(e instanceof StoreCorruptError)) throw e; // e.code === 'ERR_STORE_CORRUPT'
 *   const report = await store.verify({ repair: true });
 *   console.error(e.message, report.repaired);
 * }
 * ```
 */
export class StoreCorruptError extends GraphdriverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_STORE_CORRUPT', message, options);
  }
}

/**
 * The Storage was closed.
 *
 * @example
 * ```ts
 * import { Storage, StoreClosedError } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * await store.close();
 * try {
 *   await store.listImages();
 * } catch (e) {
 *   if (!(e instanceof StoreClosedError)) throw e; // e.code === 'ERR_STORE_CLOSED'
 * }
 * ```
 */
export class StoreClosedError extends GraphdriverError {
  constructor() {
    super('ERR_STORE_CLOSED', 'the storage has been closed');
  }
}

/**
 * An image configuration that is not valid JSON or lacks a usable `rootfs`.
 *
 * @example
 * ```ts
 * import { InvalidImageConfigError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.createImage(Buffer.from('{"architecture":"amd64","os":"linux"}')); // no rootfs
 * } catch (e) {
 *   if (!(e instanceof InvalidImageConfigError)) throw e; // e.code === 'ERR_INVALID_IMAGE_CONFIG'
 *   console.error(e.message); // invalid image configuration: missing rootfs
 * }
 * ```
 */
export class InvalidImageConfigError extends GraphdriverError {
  constructor(why: string) {
    super('ERR_INVALID_IMAGE_CONFIG', `invalid image configuration: ${why}`);
  }
}
