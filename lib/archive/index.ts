/**
 * The archive engine shared by every driver and the store: applying layer tars, computing changes, exporting diffs.
 * @module
 */
export { applyLayer, type ApplyLayerResult, type ApplyOptions, type ApplyWarning, type WhiteoutFormat } from './apply';
export { ChangeKind, changeKindLetter, sortChanges, type Change } from './change';
export {
  changesDirs,
  compareTrees,
  statDifferent,
  ambiguousTimes,
  sameFsTime,
  changesUpper,
  diffSize,
  NativeDiffUnsupportedError,
  type ChangesDirsOptions,
  type ChangesOptions,
  type DiffSizeOptions,
  type UpperChangesOptions,
} from './changes';
export { detectCompression, decompressStream, type Compression, type DecompressLimits } from './decompress';
export { exportChanges, exportUpper, type DiffWarning, type ExportOptions } from './diff';
export { readTar, type TarEntry, type TarHeader, type TarReadLimits, type TarReadOptions, type SegmentSink } from './tar-reader';
export type { TarEntryType } from './tar-header';
export { encodeHeader, paddingFor, END_OF_ARCHIVE, type TarWriteHeader } from './tar-writer';
export { Crc64, crc64 } from './crc64';
export { makeHasher, noHash, type StreamHasher, type CrcSink } from './stream-hash';
export { fileChunks, isRecyclable, type RecyclableSource, type FileChunksOptions } from './byte-source';
