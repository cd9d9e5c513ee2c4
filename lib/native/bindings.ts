/**
 * Loading the native addon and wrapping it so every call is argument-checked in TypeScript first.
 * @module
 */
import * as path from 'node:path';

import { signatures } from './signatures';
import type { NativeBindings } from './types';
import { checkArg } from './validate';


type AnyFn = (...args: unknown[]) => Promise<unknown>;

/**
 * Wraps a raw bindings object so that each method validates its arguments (TypeError/RangeError, thrown
 * synchronously as a rejected promise) before the call reaches native code.
 */
export function checkedBindings(raw: NativeBindings): NativeBindings {
  const out: Partial<Record<keyof NativeBindings, AnyFn>> = {};
  for (const name of Object.keys(signatures) as Array<keyof NativeBindings>) {
    const sig = signatures[name];
    const fn = (raw as unknown as Record<string, AnyFn | undefined>)[name];
    out[name] = async (...args: unknown[]): Promise<unknown> => {
      sig.args.forEach(([argName, kind], i) => checkArg(kind, args[i], `${name}: ${argName}`));
      sig.extra?.(args);
      if (typeof fn !== 'function') {
        throw Object.assign(new Error(`native function ${name} is not available in this build`), { code: 'ERR_NATIVE_MISSING' });
      }
      return fn.apply(raw, args);
    };
  }
  return out as unknown as NativeBindings;
}

let cached: NativeBindings | undefined;

/** Directory of the package (where binding.gyp and build/ live), from dist/ or lib/ alike. */
function packageRoot(): string {
  return path.resolve(__dirname, '..', '..');
}

/**
 * The real addon, loaded once and wrapped with {@link checkedBindings}. `GRAPHDRIVER_ADDON` overrides the path
 * (used for the sanitizer build).
 */
export function loadBindings(): NativeBindings {
  if (cached) return cached;
  const file = process.env.GRAPHDRIVER_ADDON ?? path.join(packageRoot(), 'build', 'Release', 'graphdriver.node');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const raw = require(file) as NativeBindings;
  cached = checkedBindings(raw);
  return cached;
}
