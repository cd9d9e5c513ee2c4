/**
 * dockerd 20.10 (Debian's docker.io) on a private data root and socket, with networking off, driven by its own
 * 20.10 client. The container edit runs inside the container (`docker start` of the standard edit script), which
 * is how a docker user changes a container; it is not timed. Docker has no layer-diff export nor an explicit
 * mount command, so those rows stay empty for it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { run, timed } from '../harness/command';
import type { BenchData, BenchSystem, RoundPlan, RoundResult } from './system';

const CLIENT = '/usr/bin/docker';

/** dockerd on one storage driver (overlay2, vfs, btrfs). */
export class DockerSystem implements BenchSystem {
  readonly ours = false;
  readonly label: string;
  private daemon: ChildProcess | null = null;
  protected readonly dataRoot: string;
  private readonly runDir: string;
  private readonly sock: string;
  protected rss = 0;

  constructor(
    protected readonly driver: string,
    work: string,
  ) {
    this.label = `dockerd ${driver}`;
    this.dataRoot = path.join(work, `docker-${driver}`);
    this.runDir = path.join(work, `docker-${driver}-run`);
    this.sock = `unix://${this.runDir}/docker.sock`;
  }

  protected argv(...args: string[]): string[] {
    return [CLIENT, '-H', this.sock, ...args];
  }

  protected async t(times: Record<string, number>, name: string, ...args: string[]): Promise<string> {
    const r = await timed(this.argv(...args));
    this.rss = Math.max(this.rss, r.rssKb);
    times[name] = (times[name] ?? 0) + r.ms;
    return r.stdout.trim();
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.runDir, { recursive: true });
    fs.mkdirSync(this.dataRoot, { recursive: true });
    const log = fs.openSync(path.join(this.runDir, 'dockerd.log'), 'w');
    this.daemon = spawn(
      'dockerd',
      [
        '--iptables=false',
        '--ip6tables=false',
        '--bridge=none',
        `--storage-driver=${this.driver}`,
        '--data-root',
        this.dataRoot,
        '--exec-root',
        path.join(this.runDir, 'exec'),
        '--pidfile',
        path.join(this.runDir, 'dockerd.pid'),
        '-H',
        this.sock,
      ],
      { stdio: ['ignore', log, log] },
    );
    for (let i = 0; i < 120; i++) {
      if (run(this.argv('info'), { allowFail: true }).includes('Storage Driver')) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`dockerd (${this.driver}) did not start: see ${this.runDir}/dockerd.log`);
  }

  async stop(): Promise<void> {
    const d = this.daemon;
    this.daemon = null;
    if (d && d.exitCode === null) {
      await new Promise<void>((resolve) => {
        d.once('exit', () => resolve());
        d.kill('SIGTERM');
      });
    }
    run(['umount', '-R', path.join(this.dataRoot, this.driver)], { allowFail: true });
    fs.rmSync(this.dataRoot, { recursive: true, force: true });
    fs.rmSync(this.runDir, { recursive: true, force: true });
  }

  /** Peak RSS of the daemon since the last reset, in KiB. */
  protected daemonPeak(reset: boolean): number {
    const pid = this.daemon?.pid;
    if (pid === undefined) return 0;
    try {
      if (reset) fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
      const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  }

  async round(data: BenchData, plan: RoundPlan): Promise<RoundResult> {
    const t: Record<string, number> = {};
    this.rss = 0;
    this.daemonPeak(true);
    try {
      await this.t(t, 'load_image', 'load', '-i', data.imageTar);
      const scripts = path.dirname(data.mutateScript);
      await this.t(
        t,
        'create_ctr',
        'create',
        '--network',
        'none',
        '--name',
        'c1',
        '-v',
        `${data.blob}:/bench/blob16m:ro`,
        '-v',
        `${scripts}:/bench/scripts:ro`,
        'bench/test:l123',
        '/bin/sh',
        `/bench/scripts/${path.basename(data.mutateScript)}`,
        '/',
        '/bench/blob16m',
      );
      run(this.argv('start', '-a', 'c1'));
      await this.t(t, 'changes', 'diff', 'c1');
      await this.t(t, 'commit', 'commit', 'c1', 'bench/test:commit');
      await this.t(t, 'rm_ctr', 'rm', 'c1');
      run(this.argv('rmi', 'bench/test:commit'));
      if (plan.concurrent) {
        const start = process.hrtime.bigint();
        const rs = await Promise.all(
          Array.from({ length: 16 }, (_, i) => timed(this.argv('create', '--network', 'none', '--name', `m${i}`, 'bench/test:l123', 'true'), { sync: i === 0 })),
        );
        t.create16 = Number(process.hrtime.bigint() - start) / 1e6;
        for (const r of rs) this.rss = Math.max(this.rss, r.rssKb);
        run(this.argv('rm', ...Array.from({ length: 16 }, (_, i) => `m${i}`)));
      }
      return { times: t, rssKb: this.rss + this.daemonPeak(false) };
    } finally {
      run(this.argv('rm', '-f', 'c1'), { allowFail: true });
      run(this.argv('rmi', '-f', 'bench/test:commit', 'bench/test:l123'), { allowFail: true });
    }
  }
}
