/**
 * The registry client (OCI distribution API v2): what {@link Storage.pullImage} and {@link Storage.pushImage}
 * are built on, and the pieces a program may use directly (the client, manifests, platforms, errors).
 * @module
 */
export { RegistryError, RegistryAuthError, ManifestNotFoundError, NoMatchingPlatformError, UnsupportedManifestError, InsecureRegistryError, type RegistryErrorDetail } from './errors';
export { parseRegistryReference, isLoopbackHost, manifestRef, DOCKER_HUB_HOST, type RegistryReference } from './reference';
export { Authenticator, parseWwwAuthenticate, type Credentials, type Challenge, type AuthenticatorOptions, type AuthFetch } from './auth';
export { RegistryClient, type RegistryOptions, type RegistryClientOptions, type FetchFn, type FetchedManifest, type BlobStreamOptions, type UploadOptions, type MountResult, type RequestOptions, type RequestBody } from './client';
export { type RetryOptions, IdleTimeoutError } from './retry';
export {
  MediaType,
  MANIFEST_ACCEPT,
  parseManifest,
  selectManifest,
  buildImageManifest,
  layerCompression,
  type Descriptor,
  type Manifest,
  type ImageManifest,
  type IndexManifest,
  type ManifestFormat,
  type LayerCompression,
} from './manifest';
export { DEFAULT_PLATFORM, normalizePlatform, platformString, platformRank, parsePlatform, type Platform } from './platform';
export { DistributionMetadata, type V2Metadata } from './distribution-metadata';
export { type PullOptions, type PullProgress, type PullPhase, type PullResult, type ResolvedManifest, type PullTarget } from './pull';
export { type PushOptions, type PushProgress, type PushPhase, type PushResult, type PushSource } from './push';
