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

/** The registry answered with an error status the client cannot work around. */
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

/** Authentication failed or was refused (401/403, or the token server said no). */
export class RegistryAuthError extends RegistryError {
  constructor(message: string, status?: number, details: RegistryErrorDetail[] = [], options?: { cause?: unknown }) {
    super(message, status, details, 'ERR_REGISTRY_AUTH', options);
  }
}

/** The repository or the tag/digest does not exist on the registry. */
export class ManifestNotFoundError extends RegistryError {
  constructor(readonly reference: string, details: RegistryErrorDetail[] = []) {
    super(`manifest for ${reference} not found on the registry`, 404, details, 'ERR_MANIFEST_NOT_FOUND');
  }
}

/** A manifest list / OCI index has no entry for the requested platform. */
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

/** A manifest the client cannot use: schema 1, an unknown media type, malformed JSON, foreign layers. */
export class UnsupportedManifestError extends GraphdriverError {
  constructor(message: string) {
    super('ERR_UNSUPPORTED_MANIFEST', message);
  }
}

/** Plain `http://` was needed for a registry that is neither on loopback nor declared insecure. */
export class InsecureRegistryError extends GraphdriverError {
  constructor(readonly registry: string, why: string) {
    super('ERR_INSECURE_REGISTRY', `refusing plain HTTP to ${registry}: ${why}; declare it insecure (insecure: true) if you trust the network`);
  }
}
