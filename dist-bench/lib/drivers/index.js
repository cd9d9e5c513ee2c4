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
var __exportStar = (this && this.__exportStar) || function(m, exports) {
    for (var p in m) if (p !== "default" && !Object.prototype.hasOwnProperty.call(exports, p)) __createBinding(exports, m, p);
};
Object.defineProperty(exports, "__esModule", { value: true });
exports.ProjectQuota = exports.Overlay2ProtoDriver = exports.Overlay2Driver = exports.VfsProtoDriver = exports.VfsDriver = exports.NaiveDiffDriver = exports.parseStorageOpts = exports.parseSize = exports.parseBool = exports.registeredDrivers = exports.registerDriver = exports.newDriver = exports.driverPriority = exports.RefCounter = exports.KeyedLock = exports.checkParentId = exports.checkLayerId = void 0;
/**
 * Graph drivers: the driver contract, its errors, the registry and the drivers themselves. Importing this module
 * registers every driver with {@link registerDriver}.
 * @module
 */
__exportStar(require("./driver"), exports);
__exportStar(require("./errors"), exports);
var layer_id_1 = require("./layer-id");
Object.defineProperty(exports, "checkLayerId", { enumerable: true, get: function () { return layer_id_1.checkLayerId; } });
Object.defineProperty(exports, "checkParentId", { enumerable: true, get: function () { return layer_id_1.checkParentId; } });
var keyed_lock_1 = require("./keyed-lock");
Object.defineProperty(exports, "KeyedLock", { enumerable: true, get: function () { return keyed_lock_1.KeyedLock; } });
var ref_counter_1 = require("./ref-counter");
Object.defineProperty(exports, "RefCounter", { enumerable: true, get: function () { return ref_counter_1.RefCounter; } });
var registry_1 = require("./registry");
Object.defineProperty(exports, "driverPriority", { enumerable: true, get: function () { return registry_1.driverPriority; } });
Object.defineProperty(exports, "newDriver", { enumerable: true, get: function () { return registry_1.newDriver; } });
Object.defineProperty(exports, "registerDriver", { enumerable: true, get: function () { return registry_1.registerDriver; } });
Object.defineProperty(exports, "registeredDrivers", { enumerable: true, get: function () { return registry_1.registeredDrivers; } });
var storage_opts_1 = require("./storage-opts");
Object.defineProperty(exports, "parseBool", { enumerable: true, get: function () { return storage_opts_1.parseBool; } });
Object.defineProperty(exports, "parseSize", { enumerable: true, get: function () { return storage_opts_1.parseSize; } });
Object.defineProperty(exports, "parseStorageOpts", { enumerable: true, get: function () { return storage_opts_1.parseStorageOpts; } });
var naive_diff_driver_1 = require("./naive-diff-driver");
Object.defineProperty(exports, "NaiveDiffDriver", { enumerable: true, get: function () { return naive_diff_driver_1.NaiveDiffDriver; } });
var vfs_1 = require("./vfs");
Object.defineProperty(exports, "VfsDriver", { enumerable: true, get: function () { return vfs_1.VfsDriver; } });
Object.defineProperty(exports, "VfsProtoDriver", { enumerable: true, get: function () { return vfs_1.VfsProtoDriver; } });
var overlay2_1 = require("./overlay2");
Object.defineProperty(exports, "Overlay2Driver", { enumerable: true, get: function () { return overlay2_1.Overlay2Driver; } });
Object.defineProperty(exports, "Overlay2ProtoDriver", { enumerable: true, get: function () { return overlay2_1.Overlay2ProtoDriver; } });
Object.defineProperty(exports, "ProjectQuota", { enumerable: true, get: function () { return overlay2_1.ProjectQuota; } });
//# sourceMappingURL=index.js.map