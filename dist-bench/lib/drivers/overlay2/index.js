"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.ProjectQuota = exports.MountDataTooLargeError = exports.CorruptLayerError = exports.MaxDepthError = exports.planMount = exports.generateLinkId = exports.Overlay2ProtoDriver = exports.Overlay2Driver = void 0;
/**
 * The overlay2 driver, registered under the name 'overlay2' when this module is loaded.
 * @module
 */
const registry_1 = require("../registry");
const overlay2_driver_1 = require("./overlay2-driver");
(0, registry_1.registerDriver)('overlay2', overlay2_driver_1.Overlay2Driver.init);
var overlay2_driver_2 = require("./overlay2-driver");
Object.defineProperty(exports, "Overlay2Driver", { enumerable: true, get: function () { return overlay2_driver_2.Overlay2Driver; } });
Object.defineProperty(exports, "Overlay2ProtoDriver", { enumerable: true, get: function () { return overlay2_driver_2.Overlay2ProtoDriver; } });
var layout_1 = require("./layout");
Object.defineProperty(exports, "generateLinkId", { enumerable: true, get: function () { return layout_1.generateLinkId; } });
Object.defineProperty(exports, "planMount", { enumerable: true, get: function () { return layout_1.planMount; } });
Object.defineProperty(exports, "MaxDepthError", { enumerable: true, get: function () { return layout_1.MaxDepthError; } });
Object.defineProperty(exports, "CorruptLayerError", { enumerable: true, get: function () { return layout_1.CorruptLayerError; } });
Object.defineProperty(exports, "MountDataTooLargeError", { enumerable: true, get: function () { return layout_1.MountDataTooLargeError; } });
var quota_1 = require("./quota");
Object.defineProperty(exports, "ProjectQuota", { enumerable: true, get: function () { return quota_1.ProjectQuota; } });
//# sourceMappingURL=index.js.map