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
exports.driverPriority = void 0;
exports.registerDriver = registerDriver;
exports.registeredDrivers = registeredDrivers;
exports.newDriver = newDriver;
/**
 * Driver registration and selection, as Docker's graphdriver.New: a configured name wins; else a driver whose
 * home already holds state; else the first in priority order whose init does not throw NotSupportedError.
 * @module
 */
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const errors_1 = require("./errors");
const errors_2 = require("../errors");
/** Drivers tried in this order when none is configured and none holds state. */
exports.driverPriority = Object.freeze(['overlay2', 'btrfs', 'aufs', 'devicemapper', 'vfs']);
const drivers = new Map();
/** Registers (or replaces) a driver constructor under `name`. */
function registerDriver(name, init) {
    if (!/^[a-z0-9]+$/.test(name))
        throw new TypeError(`invalid driver name ${JSON.stringify(name)}`);
    drivers.set(name, init);
}
/** Names of registered drivers. */
function registeredDrivers() {
    return [...drivers.keys()];
}
async function hasState(home) {
    try {
        const entries = await fs.readdir(home);
        return entries.length > 0;
    }
    catch {
        return false;
    }
}
/** Creates the driver per Docker's selection rules (see module doc). */
async function newDriver(cfg) {
    const deps = cfg.bindings ? { bindings: cfg.bindings } : {};
    const options = cfg.options ?? [];
    const init = (name) => {
        const fn = drivers.get(name);
        if (!fn)
            throw new errors_2.GraphdriverError('ERR_DRIVER_UNKNOWN', `unknown storage driver ${JSON.stringify(name)} (known: ${registeredDrivers().join(', ')})`);
        return fn(path.join(cfg.root, name), options, deps);
    };
    if (cfg.name !== undefined && cfg.name !== '')
        return init(cfg.name);
    const known = [...new Set([...exports.driverPriority, ...drivers.keys()])].filter((n) => drivers.has(n));
    const withState = [];
    for (const name of known)
        if (await hasState(path.join(cfg.root, name)))
            withState.push(name);
    if (withState.length > 1) {
        throw new errors_2.GraphdriverError('ERR_DRIVER_AMBIGUOUS', `${cfg.root} holds state of several storage drivers (${withState.join(', ')}); choose one explicitly or remove the others`);
    }
    if (withState.length === 1)
        return init(withState[0]);
    const reasons = [];
    for (const name of known) {
        try {
            return await init(name);
        }
        catch (e) {
            if (e instanceof errors_1.NotSupportedError) {
                reasons.push(`${name}: ${e.message}`);
                continue;
            }
            throw e;
        }
    }
    throw new errors_1.NotSupportedError(`no storage driver is supported here (${reasons.join('; ')})`);
}
//# sourceMappingURL=registry.js.map