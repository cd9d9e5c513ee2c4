/**
 * The overlay2 driver, registered under the name 'overlay2' when this module is loaded.
 * @module
 */
import { registerDriver } from '../registry';
import { Overlay2Driver } from './overlay2-driver';

registerDriver('overlay2', Overlay2Driver.init);

export { Overlay2Driver, Overlay2ProtoDriver, type Overlay2Deps, type Overlay2Features } from './overlay2-driver';
export { generateLinkId, planMount, MaxDepthError, CorruptLayerError, MountDataTooLargeError, type MountPlan } from './layout';
export { type NativeDiffCheck, type OverlayProbe } from './checks';
export { ProjectQuota } from './quota';
export { type MountInfoEntry } from './mountinfo';
