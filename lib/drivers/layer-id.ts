/**
 * Layer id validation: ids become directory and device names, so they are restricted to a safe alphabet.
 * @module
 */
import { InvalidIdError } from './errors';

const ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Throws {@link InvalidIdError} unless `id` is 1-128 chars of [A-Za-z0-9_.-] not starting with '.' or '-'. */
export function checkLayerId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !ID.test(id)) throw new InvalidIdError(id);
}

/** Normalises an optional parent id ('' / null / undefined mean none) and validates it. */
export function checkParentId(parent: string | null | undefined): string | null {
  if (parent === undefined || parent === null || parent === '') return null;
  checkLayerId(parent);
  return parent;
}
