/**
 * The vfs driver, registered under the name 'vfs' when this module is loaded.
 * @module
 */
import { registerDriver } from '../registry';
import { VfsDriver } from './vfs-driver';

registerDriver('vfs', VfsDriver.init);

export { VfsDriver, VfsProtoDriver } from './vfs-driver';
