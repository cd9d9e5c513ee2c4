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
export { parseDevmapperOptions, type DevmapperOptions } from './options';
export { parsePoolStatus, type PoolStatus } from './pool';
export { humanSize } from './human-size';
