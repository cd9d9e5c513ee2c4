/**
 * Argument checks that run in TypeScript before any native call: bad arguments become a TypeError (or
 * RangeError) here, so the addon only ever sees well-formed input.
 * @module
 */

/** How one positional argument is checked. */
export type ArgKind =
  | 'path' // non-empty string without NUL
  | 'string' // string without NUL (may be empty)
  | 'string?' // same, or null/undefined
  | 'uint' // safe non-negative integer
  | 'int' // safe integer
  | 'fd' // non-negative 32-bit integer
  | 'bool?' // boolean or undefined
  | 'buffer' // Buffer / Uint8Array
  | 'object?' // plain object or undefined
  | 'object' // plain object
  | 'array'; // array

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'string' ? `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}` : typeof v;
}

/** Throws a TypeError when `value` is not a string free of NUL bytes (and non-empty unless allowEmpty). */
export function checkString(value: unknown, name: string, allowEmpty = false): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${describe(value)}`);
  if (!allowEmpty && value.length === 0) throw new TypeError(`${name} must not be empty`);
  if (value.includes('\0')) throw new TypeError(`${name} must not contain NUL bytes`);
}

/** Throws unless `value` is a safe integer (non-negative unless `signed`). */
export function checkInteger(value: unknown, name: string, signed = false): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new TypeError(`${name} must be a safe integer, got ${describe(value)}`);
  }
  if (!signed && value < 0) throw new RangeError(`${name} must not be negative, got ${value}`);
}

/** Checks one argument against its kind. */
export function checkArg(kind: ArgKind, value: unknown, name: string): void {
  switch (kind) {
    case 'path':
      return checkString(value, name);
    case 'string':
      return checkString(value, name, true);
    case 'string?':
      if (value !== null && value !== undefined) checkString(value, name, true);
      return;
    case 'uint':
      return checkInteger(value, name);
    case 'int':
      return checkInteger(value, name, true);
    case 'fd':
      checkInteger(value, name);
      if (value > 0x7fffffff) throw new RangeError(`${name} is not a file descriptor: ${value}`);
      return;
    case 'bool?':
      if (value !== undefined && typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
      return;
    case 'buffer':
      if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Buffer, got ${describe(value)}`);
      return;
    case 'object?':
      if (value === undefined || value === null) return;
      if (typeof value !== 'object' || Array.isArray(value)) throw new TypeError(`${name} must be an object, got ${describe(value)}`);
      return;
    case 'object':
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TypeError(`${name} must be an object, got ${describe(value)}`);
      return;
    case 'array':
      if (!Array.isArray(value)) throw new TypeError(`${name} must be an array, got ${describe(value)}`);
      return;
  }
}

/** Checks the optional numeric and string fields of an options object. */
export function checkFields(obj: unknown, fields: Record<string, ArgKind>, name: string): void {
  if (obj === undefined || obj === null) return;
  const o = obj as Record<string, unknown>;
  for (const [key, kind] of Object.entries(fields)) {
    if (o[key] === undefined) continue;
    checkArg(kind, o[key], `${name}.${key}`);
  }
}
