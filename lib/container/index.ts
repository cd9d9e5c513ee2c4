/**
 * Containers: their records and the init layer.
 * @module
 */
export * from './container-store';
export * from './init-layer';
