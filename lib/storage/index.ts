/**
 * The store: layers, images and containers on a graph driver, laid out as Docker's /var/lib/docker.
 * @module
 */
export * from './errors';
export {
  Storage,
  type StorageOptions,
  type ImportImageOptions,
  type CreateContainerOptions,
  type CommitOptions,
  type RemoveImageOptions,
  type RemoveImageResult,
  type VerifyOptions,
  type VerifyReport,
  type CloseOptions,
} from './storage';
export { StoreLock, type LockOptions } from './lock';
export * from '../layer';
export * from '../image';
export * from '../container';
