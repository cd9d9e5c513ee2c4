/**
 * The layer store: content-addressed layers (diffID, chainID) and container layers on a graph driver.
 * @module
 */
export * from './layer-store';
export { chainIdOf, chainIds, sha256Digest, EMPTY_LAYER_DIFF_ID } from './digest';
export { listDriverLayers } from './driver-layers';
export { TAR_SPLIT_FILE, FILE_ENTRY, SEGMENT_ENTRY, TarSplitRecorder, readTarSplit, assembleTar, tarSplitSize, type TarSplitEntry, type LayerFiles, type AssembleOptions } from './tar-split';
