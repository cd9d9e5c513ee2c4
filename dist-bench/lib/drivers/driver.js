"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.ChangeKind = void 0;
var change_1 = require("../archive/change");
Object.defineProperty(exports, "ChangeKind", { enumerable: true, get: function () { return change_1.ChangeKind; } });
//# sourceMappingURL=driver.js.map