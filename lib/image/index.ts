/**
 * The image store (Docker's imagedb and repositories.json), image configs and references.
 * @module
 */
export * from './image-store';
export * from './config';
export * from './reference';
