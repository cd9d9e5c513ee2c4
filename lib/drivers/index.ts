/**
 * Graph drivers: the driver contract, its errors, the registry and the drivers themselves. Importing this module
 * registers every driver with {@link registerDriver}.
 * @module
 */
export * from './driver';
export * from './errors';
export { checkLayerId, checkParentId } from './layer-id';
export { KeyedLock } from './keyed-lock';
export { RefCounter } from './ref-counter';
export { driverPriority, newDriver, registerDriver, registeredDrivers, type NewDriverConfig } from './registry';
export { parseBool, parseSize, parseStorageOpts } from './storage-opts';
export { DelegatingDriver } from './delegating-driver';
export { NaiveDiffDriver, type NaiveDiffOptions } from './naive-diff-driver';
export { LayerDirDriver, LayerDirProtoDriver } from './layer-dir-driver';
export { VfsDriver, VfsProtoDriver } from './vfs';
export { BtrfsDriver, BtrfsProtoDriver } from './btrfs';
export { DevMapperDriver, DevMapperProtoDriver, PoolSpaceError, DeviceBusyError, MetadataError, type DevMapperDeps, type Runner, type FsProbe, type BaseFs } from './devmapper';
export { Overlay2Driver, Overlay2ProtoDriver, type Overlay2Deps, type Overlay2Features, type NativeDiffCheck, type OverlayProbe, type MountInfoEntry, ProjectQuota } from './overlay2';
export { AufsDriver, AufsProtoDriver, type AufsDeps, type AufsFeatures, type AufsProbe } from './aufs';
