/**
 * The aufs driver, registered under the name 'aufs' when this module is loaded.
 * @module
 */
import { registerDriver } from '../registry';
import { AufsDriver } from './aufs-driver';

registerDriver('aufs', AufsDriver.init);

export { AufsDriver, AufsProtoDriver, type AufsDeps, type AufsFeatures } from './aufs-driver';
export { planAufsMount, MountDataTooLargeError as AufsMountDataTooLargeError, type AufsMountCall, type AufsMountInput } from './branches';
export { type AufsProbe } from './checks';
export { CorruptLayerError as AufsCorruptLayerError, parseLayersFile } from './layout';
