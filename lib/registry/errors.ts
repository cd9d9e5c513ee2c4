/**
 * Errors of the registry client, with stable codes. A blob or manifest whose bytes do not match their digest
 * raises the store's {@link DigestMismatchError} (`ERR_DIGEST_MISMATCH`), so one code means one thing across the
 * library.
 * @module
 */
import { GraphdriverError } from '../errors';

export { DigestMismatchError } from '../storage/errors';

/** One entry of a registry's JSON error body (`{"errors":[{"code","message","detail"}]}`). */
export interface RegistryErrorDetail {
  code: string;
  message: string;
}

/**
 * The registry answered with an error status the client cannot work around.
 *
 * @example
 * ```ts
 * import { RegistryError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.pushImage('registry.example.com/team/app:1.0', { image: 'app:latest' });
 * } catch (e) {
 *   if (!(e instanceof RegistryError)) throw e; // e.code: 'ERR_REGISTRY' or a subclass's code
 *   console.error(e.status, e.details.map((d) => d.code)); // e.g. 400 ['BLOB_UPLOAD_INVALID']
 * }
 * ```
 */
export class RegistryError extends GraphdriverError {
  constructor(
    message: string,
    /** HTTP status, when the registry answered. */
    readonly status?: number,
    /** The registry's own error codes (`MANIFEST_UNKNOWN`, `BLOB_UPLOAD_INVALID`, ...). */
    readonly details: RegistryErrorDetail[] = [],
    code = 'ERR_REGISTRY',
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/**
 * Authentication failed or was refused (401/403, or the token server said no).
 *
 * @example
 * ```ts
 * import { RegistryAuthError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.pullImage('ghcr.io/acme/private:1.0', { credentials: { username: 'me', password: process.env.TOKEN ?? '' } });
 * } catch (e) {
 *   if (!(e instanceof RegistryAuthError)) throw e; // e.code === 'ERR_REGISTRY_AUTH'
 *   console.error(`access refused (HTTP ${e.status ?? '-'}): check the credentials`);
 * }
 * ```
 */
export class RegistryAuthError extends RegistryError {
  constructor(message: string, status?: number, details: RegistryErrorDetail[] = [], options?: { cause?: unknown }) {
    super(message, status, details, 'ERR_REGISTRY_AUTH', options);
  }
}

/**
 * The repository or the tag/digest does not exist on the registry.
 *
 * @example
 * ```ts
 * import { ManifestNotFoundError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.pullImage('busybox:no-such-tag');
 * } catch (e) {
 *   if (!(e instanceof ManifestNotFoundError)) throw e; // e.code === 'ERR_MANIFEST_NOT_FOUND', e.status === 404
 *   console.error(`${e.reference} is not on the registry`);
 * }
 * ```
 */
export class ManifestNotFoundError extends RegistryError {
  constructor(readonly reference: string, details: RegistryErrorDetail[] = []) {
    super(`manifest for ${reference} not found on the registry`, 404, details, 'ERR_MANIFEST_NOT_FOUND');
  }
}

/**
 * A manifest list / OCI index has no entry for the requested platform.
 *
 * @example
 * ```ts
 * import { NoMatchingPlatformError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.pullImage('busybox:latest', { platform: 'linux/riscv32' });
 * } catch (e) {
 *   if (!(e instanceof NoMatchingPlatformError)) throw e; // e.code === 'ERR_NO_MATCHING_PLATFORM'
 *   console.error(`no ${e.platform} image; available: ${e.available.join(', ')}`);
 * }
 * ```
 */
export class NoMatchingPlatformError extends GraphdriverError {
  constructor(
    readonly reference: string,
    readonly platform: string,
    readonly available: string[],
  ) {
    super(
      'ERR_NO_MATCHING_PLATFORM',
      `no manifest for platform ${platform} in ${reference}` + (available.length > 0 ? ` (available: ${available.join(', ')})` : '') + '; pass another platform',
    );
  }
}

/**
 * A manifest the client cannot use: schema 1, an unknown media type, malformed JSON, foreign layers.
 *
 * @example
 * ```ts
 * import { Storage, UnsupportedManifestError } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.pullImage('registry.example.com/legacy/app:2015');
 * } catch (e) {
 *   if (!(e instanceof UnsupportedManifestError)) throw e; // e.code === 'ERR_UNSUPPORTED_MANIFEST'
 *   console.error(e.message); // e.g. Docker image manifest schema 1 is not supported ...
 * }
 * ```
 */
export class UnsupportedManifestError extends GraphdriverError {
  constructor(message: string) {
    super('ERR_UNSUPPORTED_MANIFEST', message);
  }
}

/**
 * Plain `http://` was needed for a registry that is neither on loopback nor declared insecure.
 *
 * @example
 * ```ts
 * import { InsecureRegistryError, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * try {
 *   await store.pullImage('registry.lan:5000/app:1.0');
 * } catch (e) {
 *   if (!(e instanceof InsecureRegistryError)) throw e; // e.code === 'ERR_INSECURE_REGISTRY'
 *   // only when the network to e.registry is trusted: allow plain http, as Docker's insecure-registries
 *   await store.pullImage('registry.lan:5000/app:1.0', { insecure: true });
 * }
 * ```
 */
export class InsecureRegistryError extends GraphdriverError {
  constructor(readonly registry: string, why: string) {
    super('ERR_INSECURE_REGISTRY', `refusing plain HTTP to ${registry}: ${why}; declare it insecure (insecure: true) if you trust the network`);
  }
}
