/**
 * The vfs driver against the real kernel: the shared conformance suite, plus vfs specifics (layout, leftovers,
 * parent records, options, unprivileged use).
 */
import { runDriverConformance } from '../conformance/driver-conformance';
import { VfsDriver } from '../../lib/drivers/vfs';

runDriverConformance('vfs', (home) => VfsDriver.init(home), { deepChain: 128 });
