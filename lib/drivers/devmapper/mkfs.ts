/**
 * Filesystems on thin devices: choosing, creating and growing them with the standard tools (mkfs.xfs, mkfs.ext4,
 * tune2fs, resize2fs, xfs_growfs), and reading a device's filesystem type and UUID straight from its superblock
 * (so that no blkid is needed).
 * @module
 */
import { execFile } from 'node:child_process';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';

import { GraphdriverError } from '../../errors';
import type { BaseFs } from './options';

/** Runs a program with arguments; resolves with its output, rejects when it fails. */
export type Runner = (file: string, args: readonly string[]) => Promise<{ stdout: string; stderr: string }>;

/** An external tool failed; the message carries its stderr. */
export class ToolError extends GraphdriverError {
  constructor(
    readonly tool: string,
    readonly args: readonly string[],
    readonly stderr: string,
    why: string,
    options?: { cause?: unknown },
  ) {
    const err = stderr.trim().split('\n').slice(-5).join(' | ');
    super('ERR_DEVMAPPER_TOOL', `devicemapper: ${tool} ${args.join(' ')} failed (${why})${err ? `: ${err}` : ''}`, options);
  }
}

const SEARCH_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

function searchDirs(): string[] {
  return [...new Set([...(process.env.PATH ?? '').split(':').filter((d) => d !== ''), ...SEARCH_PATH])];
}

/** The full path of `tool` on PATH (or in the usual sbin directories), null when it is not installed. */
export function findTool(tool: string): string | null {
  for (const d of searchDirs()) {
    const p = `${d}/${tool}`;
    try {
      fsSync.accessSync(p, fsSync.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

/** Runs tools found with {@link findTool}; failures become {@link ToolError}s. */
export const defaultRunner: Runner = (file, args) =>
  new Promise((resolve, reject) => {
    const exe = file.includes('/') ? file : findTool(file);
    if (exe === null) {
      reject(new ToolError(file, args, '', `${file} is not installed`));
      return;
    }
    execFile(exe, [...args], { maxBuffer: 4 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) {
        const why = typeof err.code === 'number' ? `exit status ${err.code}` : err.message;
        reject(new ToolError(file, args, String(stderr), why, { cause: err }));
        return;
      }
      resolve({ stdout: String(stdout), stderr: String(stderr) });
    });
  });

/** Whether the kernel lists `fsName` in /proc/filesystems. */
export function kernelSupportsFs(fsName: string): boolean {
  try {
    return fsSync
      .readFileSync('/proc/filesystems', 'utf8')
      .split('\n')
      .some((l) => l.trim().split(/\s+/).pop() === fsName);
  } catch {
    return false;
  }
}

/** Smallest filesystem mkfs.xfs accepts (xfsprogs 5.19 and later). */
export const XFS_MIN_SIZE = 300 * 1024 * 1024;

/**
 * Docker's determineDefaultFS: xfs when mkfs.xfs is installed and the kernel has xfs, else ext4. A base device
 * smaller than xfs allows gets ext4 as well (Docker would fail in mkfs instead).
 */
export function chooseDefaultFs(baseSize: number, env: { hasTool: (t: string) => boolean; kernelHasFs: (f: string) => boolean }): BaseFs {
  if (baseSize >= XFS_MIN_SIZE && env.hasTool('mkfs.xfs') && env.kernelHasFs('xfs')) return 'xfs';
  return 'ext4';
}

/**
 * Formats `device` as Docker does: `mkfs.xfs <args> dev`, or `mkfs.ext4 -E nodiscard,lazy_itable_init=0,
 * lazy_journal_init=0 <args> dev` (retried without lazy_journal_init for old e2fsprogs) followed by
 * `tune2fs -c -1 -i 0` when tune2fs is installed. Writing the inode tables and journal now, not lazily after the
 * first mount, keeps every layer from carrying a copy of them.
 */
export async function makeFilesystem(run: Runner, fsType: BaseFs, device: string, mkfsArgs: readonly string[], hasTool: (t: string) => boolean): Promise<void> {
  if (fsType === 'xfs') {
    await run('mkfs.xfs', [...mkfsArgs, device]);
    return;
  }
  try {
    await run('mkfs.ext4', ['-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', ...mkfsArgs, device]);
  } catch (e) {
    if (!(e instanceof ToolError) || !/lazy_journal_init/.test(e.message)) throw e;
    await run('mkfs.ext4', ['-E', 'nodiscard,lazy_itable_init=0', ...mkfsArgs, device]);
  }
  if (hasTool('tune2fs')) await run('tune2fs', ['-c', '-1', '-i', '0', device]);
}

/** Grows the filesystem of `device`, mounted at `mountPoint`, to the size of the device (online). */
export async function growFilesystem(run: Runner, fsType: BaseFs, device: string, mountPoint: string): Promise<void> {
  if (fsType === 'xfs') await run('xfs_growfs', [mountPoint]);
  else await run('resize2fs', [device]);
}

/** What a superblock says. */
export interface FsProbe {
  type: BaseFs;
  /** Lower-case, dashed, as blkid prints it. */
  uuid: string;
}

/** Bytes of a device to read for {@link probeFilesystem}. */
export const PROBE_BYTES = 2048;

function uuidString(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * Reads the filesystem type and UUID from the first {@link PROBE_BYTES} of a device: xfs has its superblock at 0
 * (magic "XFSB", uuid at 32), ext2/3/4 at 1024 (magic 0xEF53 at +56, uuid at +104). Null for anything else.
 */
export function probeFilesystem(head: Buffer): FsProbe | null {
  if (head.length >= 48 && head.readUInt32BE(0) === 0x58465342) return { type: 'xfs', uuid: uuidString(head.subarray(32, 48)) };
  if (head.length >= 1024 + 120 && head.readUInt16LE(1024 + 56) === 0xef53) {
    return { type: 'ext4', uuid: uuidString(head.subarray(1024 + 104, 1024 + 120)) };
  }
  return null;
}

/** {@link probeFilesystem} of the device (or image file) at `device`. */
export async function readFilesystem(device: string): Promise<FsProbe | null> {
  const h = await fs.open(device, 'r');
  try {
    const buf = Buffer.alloc(PROBE_BYTES);
    const { bytesRead } = await h.read(buf, 0, PROBE_BYTES, 0);
    return probeFilesystem(buf.subarray(0, bytesRead));
  } finally {
    await h.close();
  }
}
