/**
 * graphdriver: Docker's layered storage for Node.js.
 * @packageDocumentation
 */
export * from './native';
