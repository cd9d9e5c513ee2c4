"use strict";
/**
 * Typed surface of the native addon. Every method returns a Promise and runs off the event loop; failures
 * reject with a {@link NativeError}. Paths are absolute or relative to the process cwd unless stated.
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
//# sourceMappingURL=types.js.map