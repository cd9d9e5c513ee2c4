"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.VfsProtoDriver = exports.VfsDriver = void 0;
/**
 * The vfs driver, registered under the name 'vfs' when this module is loaded.
 * @module
 */
const registry_1 = require("../registry");
const vfs_driver_1 = require("./vfs-driver");
(0, registry_1.registerDriver)('vfs', vfs_driver_1.VfsDriver.init);
var vfs_driver_2 = require("./vfs-driver");
Object.defineProperty(exports, "VfsDriver", { enumerable: true, get: function () { return vfs_driver_2.VfsDriver; } });
Object.defineProperty(exports, "VfsProtoDriver", { enumerable: true, get: function () { return vfs_driver_2.VfsProtoDriver; } });
//# sourceMappingURL=index.js.map