/**
 * The image store (Docker's imagedb and repositories.json), image configs and references.
 * @module
 */
export * from './image-store';
export * from './config';
export * from './reference';
export { loadImageArchive, type LoadImageOptions, type LoadProgress, type LoadTarget } from './load';
export { saveImageArchive, type SaveImageOptions, type SaveSource } from './save';
export { ImageArchive, cleanArchivePath } from './archive-files';
