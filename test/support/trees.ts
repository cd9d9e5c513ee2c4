/**
 * Real trees for the archive integration tests: a small root filesystem with one entry of every kind.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FileType, makedev } from '../../lib/native/constants';

const b = loadBindings();

/** VFS_CAP_REVISION_2 with the effective flag: cap_net_raw (bit 13) permitted. */
export const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** Writes a file (creating parents) and sets its mode exactly (umask-free). */
export function write(root: string, rel: string, data: string | Buffer, mode = 0o644): void {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data, { mode });
  fs.chmodSync(p, mode);
}

/** A small root filesystem with one of everything. */
export async function buildBase(root: string): Promise<void> {
  fs.mkdirSync(root, { recursive: true });
  write(root, 'etc/hosts', '127.0.0.1 localhost\n');
  write(root, 'etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  write(root, 'etc/motd', 'hello\n');
  write(root, 'etc/ns', 'nanoseconds\n');
  write(root, 'bin/ping', 'ELF ping', 0o755);
  write(root, 'bin/tool', 'ELF tool', 0o755);
  write(root, 'bin/suid', 'ELF suid', 0o4755);
  write(root, 'var/log/old.log', 'old\n');
  write(root, 'var/log/keep.log', 'keep\n');
  write(root, 'srv/data/a', 'a');
  write(root, 'srv/data/b/c', 'c');
  write(root, 'opt/x', 'x');
  write(root, 'home/u/.profile', 'export A=1\n');
  write(root, 'usr/share/doc/README', 'doc');
  write(root, 'usr/share/misc/magic', 'magic');
  fs.mkdirSync(path.join(root, 'dev'));
  await b.mknod(path.join(root, 'dev/null'), FileType.S_IFCHR | 0o666, makedev(1, 3));
  fs.chmodSync(path.join(root, 'dev/null'), 0o666); // mknod is subject to the umask
  execFileSync('mkfifo', ['-m', '0600', path.join(root, 'fifo')]);
  fs.symlinkSync('/etc/hosts', path.join(root, 'lnk'));
  fs.linkSync(path.join(root, 'etc/motd'), path.join(root, 'hard'));
  fs.chownSync(path.join(root, 'home/u'), 1000, 1000);
  fs.chownSync(path.join(root, 'home/u/.profile'), 1000, 1000);
  await b.lsetxattr(path.join(root, 'bin/ping'), 'security.capability', CAP);
}

/** Sets a path's mtime (and atime) to the nanosecond, without following a final symlink. */
export async function setMtime(file: string, sec: number, nsec: number): Promise<void> {
  const fd = fs.openSync(path.dirname(file), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await b.setTimes(fd, [{ path: path.basename(file), mtimeSec: sec, mtimeNsec: nsec, atimeSec: sec, atimeNsec: nsec }]);
  } finally {
    fs.closeSync(fd);
  }
}

