/**
 * Timed child commands for the peers (GNU tar, containers-storage, docker, umoci): wall time measured here with
 * hrtime, peak RSS by /usr/bin/time (the command's own maximum resident set), stdout captured for the caller.
 * `sync` runs before each timed command (untimed) so that earlier writeback is not charged to it.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { msSince } from './stats';

/** Result of a timed command. */
export interface Timed {
  ms: number;
  /** Peak RSS of the command in KiB (from /usr/bin/time), 0 when unknown. */
  rssKb: number;
  stdout: string;
}

/** Error of a peer command that exited non-zero: carries its stderr for the report. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')} exited ${status}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
  }
}

const timeFile = path.join(os.tmpdir(), `gd-bench-time-${process.pid}`);

/** Flushes dirty pages of every file system (untimed preparation of a timed step). */
export function syncAll(): void {
  spawnSync('sync');
}

/** Runs `argv` to completion, timed. Rejects with CommandError on a non-zero exit. */
export function timed(argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; sync?: boolean } = {}): Promise<Timed> {
  if (opts.sync !== false) syncAll();
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, ...argv], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (status) => {
      const ms = msSince(t0);
      const stderr = Buffer.concat(err).toString();
      if (status !== 0) {
        reject(new CommandError(argv, status, stderr));
        return;
      }
      let rssKb = 0;
      try {
        rssKb = Number(fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop()) || 0;
      } catch {
        // /usr/bin/time could not write its report: RSS unknown
      }
      resolve({ ms, rssKb, stdout: Buffer.concat(out).toString() });
    });
  });
}

/** Runs an untimed helper command synchronously; throws CommandError on failure. */
export function run(argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; allowFail?: boolean; input?: string } = {}): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { env: opts.env ?? process.env, encoding: 'utf8', input: opts.input, maxBuffer: 1 << 28 });
  if (r.status !== 0 && !opts.allowFail) throw new CommandError(argv, r.status, `${r.stderr ?? ''}${r.error ? String(r.error) : ''}`);
  return r.stdout ?? '';
}

/** True when `tool` is on PATH. */
export function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}
