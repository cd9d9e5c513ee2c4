/**
 * The native layer: typed bindings, their loader and Linux constants.
 * @module
 */
export * from './types';
export { checkedBindings, loadBindings } from './bindings';
export * from './constants';
