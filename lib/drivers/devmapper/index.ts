/**
 * The devicemapper driver, registered under the name 'devicemapper' when this module is loaded.
 * @module
 */
import { registerDriver } from '../registry';
import { DevMapperDriver } from './devmapper-driver';

registerDriver('devicemapper', DevMapperDriver.init);

export { DevMapperDriver, DevMapperProtoDriver, type DevMapperDeps } from './devmapper-driver';
export { DeviceSet, DeviceBusyError, PoolSpaceError, type DeviceSetStatus } from './device-set';
export { MetadataError } from './metadata';
export { parseDevmapperOptions, type DevmapperOptions, type BaseFs } from './options';
export { type Runner, type FsProbe } from './mkfs';
export { parsePoolStatus, type PoolStatus } from './pool';
export { humanSize } from './human-size';
