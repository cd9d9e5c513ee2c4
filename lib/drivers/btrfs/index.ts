/**
 * The btrfs driver, registered under the name 'btrfs' when this module is loaded.
 * @module
 */
import { registerDriver } from '../registry';
import { BtrfsDriver } from './btrfs-driver';

registerDriver('btrfs', BtrfsDriver.init);

export { BtrfsDriver, BtrfsProtoDriver, nestedSubvolumes } from './btrfs-driver';
