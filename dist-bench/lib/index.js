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
/**
 * graphdriver: Docker's layered storage for Node.js.
 *
 * - {@link newDriver} and the driver classes ({@link Overlay2Driver}, {@link VfsDriver}, ...) manage layers;
 * - the archive engine ({@link applyLayer}, {@link changesDirs}, {@link exportChanges}) reads and writes layer tars;
 * - {@link loadBindings} exposes the native system-call layer.
 * @packageDocumentation
 */
__exportStar(require("./errors"), exports);
__exportStar(require("./native"), exports);
__exportStar(require("./archive"), exports);
__exportStar(require("./drivers"), exports);
//# sourceMappingURL=index.js.map