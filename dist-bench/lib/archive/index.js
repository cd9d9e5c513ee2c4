"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.END_OF_ARCHIVE = exports.paddingFor = exports.encodeHeader = exports.readTar = exports.exportUpper = exports.exportChanges = exports.decompressStream = exports.detectCompression = exports.NativeDiffUnsupportedError = exports.diffSize = exports.changesUpper = exports.sameFsTime = exports.ambiguousTimes = exports.statDifferent = exports.compareTrees = exports.changesDirs = exports.sortChanges = exports.changeKindLetter = exports.ChangeKind = exports.applyLayer = void 0;
/**
 * The archive engine shared by every driver and the store: applying layer tars, computing changes, exporting diffs.
 * @module
 */
var apply_1 = require("./apply");
Object.defineProperty(exports, "applyLayer", { enumerable: true, get: function () { return apply_1.applyLayer; } });
var change_1 = require("./change");
Object.defineProperty(exports, "ChangeKind", { enumerable: true, get: function () { return change_1.ChangeKind; } });
Object.defineProperty(exports, "changeKindLetter", { enumerable: true, get: function () { return change_1.changeKindLetter; } });
Object.defineProperty(exports, "sortChanges", { enumerable: true, get: function () { return change_1.sortChanges; } });
var changes_1 = require("./changes");
Object.defineProperty(exports, "changesDirs", { enumerable: true, get: function () { return changes_1.changesDirs; } });
Object.defineProperty(exports, "compareTrees", { enumerable: true, get: function () { return changes_1.compareTrees; } });
Object.defineProperty(exports, "statDifferent", { enumerable: true, get: function () { return changes_1.statDifferent; } });
Object.defineProperty(exports, "ambiguousTimes", { enumerable: true, get: function () { return changes_1.ambiguousTimes; } });
Object.defineProperty(exports, "sameFsTime", { enumerable: true, get: function () { return changes_1.sameFsTime; } });
Object.defineProperty(exports, "changesUpper", { enumerable: true, get: function () { return changes_1.changesUpper; } });
Object.defineProperty(exports, "diffSize", { enumerable: true, get: function () { return changes_1.diffSize; } });
Object.defineProperty(exports, "NativeDiffUnsupportedError", { enumerable: true, get: function () { return changes_1.NativeDiffUnsupportedError; } });
var decompress_1 = require("./decompress");
Object.defineProperty(exports, "detectCompression", { enumerable: true, get: function () { return decompress_1.detectCompression; } });
Object.defineProperty(exports, "decompressStream", { enumerable: true, get: function () { return decompress_1.decompressStream; } });
var diff_1 = require("./diff");
Object.defineProperty(exports, "exportChanges", { enumerable: true, get: function () { return diff_1.exportChanges; } });
Object.defineProperty(exports, "exportUpper", { enumerable: true, get: function () { return diff_1.exportUpper; } });
var tar_reader_1 = require("./tar-reader");
Object.defineProperty(exports, "readTar", { enumerable: true, get: function () { return tar_reader_1.readTar; } });
var tar_writer_1 = require("./tar-writer");
Object.defineProperty(exports, "encodeHeader", { enumerable: true, get: function () { return tar_writer_1.encodeHeader; } });
Object.defineProperty(exports, "paddingFor", { enumerable: true, get: function () { return tar_writer_1.paddingFor; } });
Object.defineProperty(exports, "END_OF_ARCHIVE", { enumerable: true, get: function () { return tar_writer_1.END_OF_ARCHIVE; } });
//# sourceMappingURL=index.js.map