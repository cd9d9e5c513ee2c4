"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.checkedBindings = checkedBindings;
exports.loadBindings = loadBindings;
/**
 * Loading the native addon and wrapping it so every call is argument-checked in TypeScript first.
 * @module
 */
const path = __importStar(require("node:path"));
const signatures_1 = require("./signatures");
const validate_1 = require("./validate");
/**
 * Wraps a raw bindings object so that each method validates its arguments (TypeError/RangeError, thrown
 * synchronously as a rejected promise) before the call reaches native code.
 */
function checkedBindings(raw) {
    const out = {};
    for (const name of Object.keys(signatures_1.signatures)) {
        const sig = signatures_1.signatures[name];
        const fn = raw[name];
        out[name] = async (...args) => {
            sig.args.forEach(([argName, kind], i) => (0, validate_1.checkArg)(kind, args[i], `${name}: ${argName}`));
            sig.extra?.(args);
            if (typeof fn !== 'function') {
                throw Object.assign(new Error(`native function ${name} is not available in this build`), { code: 'ERR_NATIVE_MISSING' });
            }
            return fn.apply(raw, args);
        };
    }
    return out;
}
let cached;
/** Directory of the package (where binding.gyp and build/ live), from dist/ or lib/ alike. */
function packageRoot() {
    return path.resolve(__dirname, '..', '..');
}
/**
 * The real addon, loaded once and wrapped with {@link checkedBindings}. `GRAPHDRIVER_ADDON` overrides the path
 * (used for the sanitizer build).
 */
function loadBindings() {
    if (cached)
        return cached;
    const file = process.env.GRAPHDRIVER_ADDON ?? path.join(packageRoot(), 'build', 'Release', 'graphdriver.node');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const raw = require(file);
    cached = checkedBindings(raw);
    return cached;
}
//# sourceMappingURL=bindings.js.map