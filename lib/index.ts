/**
 * graphdriver: Docker's layered storage for Node.js.
 *
 * - {@link newDriver} and the driver classes ({@link Overlay2Driver}, {@link VfsDriver}, ...) manage layers;
 * - the archive engine ({@link applyLayer}, {@link changesDirs}, {@link exportChanges}) reads and writes layer tars;
 * - {@link Storage} keeps layers, images and containers as Docker's layer/image store does, and pulls/pushes
 *   images from/to registries ({@link RegistryClient});
 * - {@link loadBindings} exposes the native system-call layer.
 * @packageDocumentation
 */
export * from './errors';
export * from './native';
export * from './archive';
export * from './drivers';
export * from './storage';
export * from './registry';
