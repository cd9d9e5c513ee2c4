/**
 * The `graphdriver` command as a user runs it: the package is compiled with tsc into a temp copy laid out like an
 * installed package (package.json, node_modules, dist/), the bin file is made executable as npm does when it links
 * a bin, and every command runs as its own process through the shebang, on vfs and overlay2 with a temp --root.
 * Checked: exit codes (0/1/2), stdout for people (exact where Docker's format is exact) and under --json (parsed),
 * errors with their hints, mounts that outlive the process, changes and diff content, commit, rm, rmi, the store
 * lock against a second process, an unsupported driver, and the plain progress lines of load on a pipe.
 *
 * GRAPHDRIVER_CLI_BIN=<path to dist/cli/main.js> skips the compilation and tests that build instead.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { readTar } from '../../lib/archive/tar-reader';
import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const REPO = path.resolve(__dirname, '..', '..');
const ADDON = process.env.GRAPHDRIVER_ADDON ?? path.join(REPO, 'build', 'Release', 'graphdriver.node');
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const HEX64 = /^[0-9a-f]{64}$/;

let pkgDir: string | undefined;
let bin = '';
const tmpDirs: string[] = [];
const children = new Set<ChildProcess>();

/** A temp dir removed (after unmounting what is below it) at the end. */
function tmpDir(prefix: string): string {
  const d = makeTmp(prefix);
  tmpDirs.push(d);
  return d;
}

interface Result {
  code: number | null;
  stdout: Buffer;
  out: string;
  err: string;
}

/** Runs the command through its shebang; `input` is written to stdin (closed at once when absent). */
function gd(args: string[], opts: { input?: Buffer | string; keepStdinOpen?: (c: ChildProcess) => void } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, GRAPHDRIVER_ADDON: ADDON }, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      children.delete(child);
      const stdout = Buffer.concat(out);
      resolve({ code, stdout, out: stdout.toString('utf8'), err: Buffer.concat(err).toString('utf8') });
    });
    if (opts.keepStdinOpen) opts.keepStdinOpen(child);
    else child.stdin!.end(opts.input ?? '');
  });
}

/** Parses the JSON a command printed, failing with its stderr when it did not succeed. */
function json<T>(r: Result): T {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.err}`);
  return JSON.parse(r.out) as T;
}

async function tarEntries(tar: Buffer): Promise<Array<{ name: string; type: string; body: string }>> {
  const out: Array<{ name: string; type: string; body: string }> = [];
  for await (const e of readTar(Readable.from([tar]))) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    out.push({ name: e.header.name, type: e.header.type, body: Buffer.concat(parts).toString('utf8') });
  }
  return out;
}

/** Mount points at or below `dir`. */
function mountsBelow(dir: string): string[] {
  const real = fs.realpathSync(dir);
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === real || m.startsWith(`${real}/`));
}

const rootReason = !isRoot ? 'needs root (the drivers mount, and store files owned by root)' : !fs.existsSync(ADDON) ? `no addon at ${ADDON}` : null;

beforeAll(() => {
  if (rootReason !== null) return;
  if (process.env.GRAPHDRIVER_CLI_BIN) {
    bin = path.resolve(process.env.GRAPHDRIVER_CLI_BIN);
    return;
  }
  pkgDir = makeTmp('gd-cli-pkg-');
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(pkgDir, 'package.json'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(pkgDir, 'node_modules'));
  // tsc emits even when some file of the tree has a type error; what matters here is the emitted CLI.
  const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', path.join(pkgDir, 'dist')], {
    cwd: REPO,
    encoding: 'utf8',
  });
  bin = path.join(pkgDir, 'dist', 'cli', 'main.js');
  if (!fs.existsSync(bin)) throw new Error(`tsc did not emit ${bin}: ${r.stdout}${r.stderr}`);
  // npm makes bin files executable when it installs or links the package.
  fs.chmodSync(bin, 0o755);
}, 600_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (rootReason === null) {
    const b = loadBindings();
    for (const d of tmpDirs) {
      if (!fs.existsSync(d)) continue;
      for (const m of mountsBelow(d).sort().reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
    }
  }
  for (const d of tmpDirs) removeTmp(d);
  removeTmp(pkgDir);
});

/** The base image's layer: a tiny root with files the container then changes. */
const BASE_TAR = buildTar([
  { name: 'bin/', type: 'dir' },
  { name: 'bin/sh', data: '#!/bin/true\n', mode: 0o755 },
  { name: 'etc/', type: 'dir' },
  { name: 'etc/motd', data: 'hello\n' },
  { name: 'usr/', type: 'dir' },
  { name: 'usr/share/', type: 'dir' },
  { name: 'usr/share/readme', data: 'read me\n' },
]);

describeIf(rootReason, 'the built command', () => {
  test('the compiled entry point keeps its shebang and runs through it', async () => {
    expect(fs.readFileSync(bin, 'utf8').split('\n')[0]).toBe('#!/usr/bin/env node');
    const r = await gd(['--version']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\d+\.\d+\.\d+/);
  });

  test('usage errors exit with 2, with a hint (as JSON under --json)', async () => {
    let r = await gd(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.err).toBe("graphdriver: error: unknown command 'frobnicate'\nhint: run `graphdriver --help` or `graphdriver <command> --help` for usage\n");
    r = await gd(['--json', 'tag', 'only-one']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.err)).toEqual({ error: expect.objectContaining({ code: 'ERR_USAGE', exitCode: 2, message: "missing required argument 'target'" }) });
    r = await gd(['images', '--no-such-option']);
    expect(r.code).toBe(2);
    r = await gd(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Usage: graphdriver \[options\] \[command\]/);
  });
});

const DRIVERS: Array<[string, string | null]> = [
  ['vfs', rootReason],
  ['overlay2', rootReason ?? (kernelHasFs('overlay') ? null : 'the kernel has no overlay')],
];

for (const [driver, reason] of DRIVERS) {
  describeIf(reason, `graphdriver CLI on ${driver}`, () => {
    let root = '';
    const g = (args: string[], opts?: { input?: Buffer | string }): Promise<Result> => gd(['--root', root, '--driver', driver, ...args], opts);
    const baseDiffId = sha(BASE_TAR);
    let baseId = '';
    let containerId = '';
    let mountPath = '';
    let diffTar: Buffer = Buffer.alloc(0);
    let committedId = '';

    beforeAll(() => {
      root = tmpDir(`gd-cli-${driver}-`);
    });

    test('info on an empty store', async () => {
      const info = json<{ root: string; driver: string; driverStatus: Array<[string, string]>; images: number; layers: number; containers: number }>(await g(['--json', 'info']));
      expect(info).toMatchObject({ root, driver, images: 0, layers: 0, containers: 0 });
      if (driver === 'overlay2') expect(info.driverStatus.map(([k]) => k)).toEqual(['Backing Filesystem', 'Supports d_type', 'Using metacopy', 'Native Overlay Diff', 'userxattr']);
      else expect(info.driverStatus).toEqual([]);
      const human = await g(['info']);
      expect(human.code).toBe(0);
      expect(human.out).toMatch(new RegExp(`^Root: ${root}\\nStorage Driver: ${driver}\\n`));
      expect(human.out).toMatch(/\nImages: 0\nLayers: 0\nContainers: 0\n$/);
    });

    test('import a generated tar from a file: prints the image id', async () => {
      const file = path.join(root, '..', `${path.basename(root)}-base.tar`);
      fs.writeFileSync(file, BASE_TAR);
      tmpDirs.push(file);
      const r = await g(['import', '-m', 'base layer', file, 'base:1']);
      expect(r).toMatchObject({ code: 0, err: '' });
      expect(r.out).toMatch(/^sha256:[0-9a-f]{64}\n$/);
      baseId = r.out.trim();
      const images = json<Array<{ id: string; references: string[]; layers: string[]; diffIds: string[] }>>(await g(['images', '--json']));
      expect(images).toEqual([expect.objectContaining({ id: baseId, references: ['docker.io/library/base:1'], layers: [baseDiffId], diffIds: [baseDiffId] })]);
    });

    test('import from stdin (gzip): same layer, another image; rmi removes it again', async () => {
      const r = await g(['import', '-', 'base:stdin'], { input: zlib.gzipSync(BASE_TAR) });
      expect(r.code).toBe(0);
      const id = r.out.trim();
      expect(id).not.toBe(baseId);
      expect(json<unknown[]>(await g(['layers', '--json']))).toHaveLength(1);
      const rm = await g(['rmi', 'base:stdin']);
      expect(rm).toMatchObject({ code: 0, out: `Untagged: base:stdin\nDeleted: ${id}\n` });
    });

    test('images, tag, layers for people', async () => {
      let r = await g(['images']);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE\\nbase +1 +${baseId.slice(7, 19)} +(Less than a second|\\d+ seconds?) ago +\\d+B\\n$`));
      r = await g(['tag', 'base:1', 'other/name:2']);
      expect(r).toMatchObject({ code: 0, out: '', err: '' });
      const imgs = json<Array<{ references: string[] }>>(await g(['images', '--json']));
      expect(imgs[0]!.references).toEqual(['docker.io/library/base:1', 'docker.io/other/name:2']);
      expect((await g(['images', '-q'])).out).toBe(`${baseId.slice(7, 19)}\n`);
      r = await g(['layers']);
      expect(r.out).toMatch(new RegExp(`^CHAIN ID +DIFF ID +PARENT +CACHE ID +SIZE\\n${baseDiffId.slice(7, 19)} +${baseDiffId.slice(7, 19)} +<none> +[0-9a-f]{12} +\\d+B\\n$`));
    });

    test('create, ps', async () => {
      const r = await g(['create', '--name', 'c1', 'base:1']);
      expect(r.code).toBe(0);
      containerId = r.out.trim();
      expect(containerId).toMatch(HEX64);
      const ps = json<Array<{ id: string; name: string; image: string }>>(await g(['ps', '--json']));
      expect(ps).toEqual([expect.objectContaining({ id: containerId, name: 'c1', image: baseId })]);
      expect((await g(['ps'])).out).toMatch(new RegExp(`^CONTAINER ID +IMAGE +CREATED +NAMES\\n${containerId.slice(0, 12)} +base:1 +.+ ago +c1\\n$`));
    });

    test('mount: the root filesystem stays mounted after the command exits; write to it', async () => {
      const r = await g(['mount', 'c1']);
      expect(r.code).toBe(0);
      mountPath = r.out.trim();
      expect(path.isAbsolute(mountPath)).toBe(true);
      expect(mountPath.startsWith(`${root}/${driver}/`)).toBe(true);
      if (driver === 'overlay2') expect(mountsBelow(root)).toContain(mountPath);
      expect(fs.readFileSync(path.join(mountPath, 'etc/motd'), 'utf8')).toBe('hello\n');
      // The init layer is there too.
      expect(fs.existsSync(path.join(mountPath, '.dockerenv'))).toBe(true);
      fs.writeFileSync(path.join(mountPath, 'etc/new.txt'), 'new file\n');
      fs.appendFileSync(path.join(mountPath, 'etc/motd'), 'more\n');
      fs.unlinkSync(path.join(mountPath, 'bin/sh'));
      // Another command in between does not take the mount away.
      expect((await g(['images', '-q'])).code).toBe(0);
      if (driver === 'overlay2') expect(mountsBelow(root)).toContain(mountPath);
    });

    test('changes: exactly Docker’s lines', async () => {
      const r = await g(['changes', 'c1']);
      expect(r).toMatchObject({ code: 0, err: '' });
      expect(r.out).toBe('C /bin\nD /bin/sh\nC /etc\nC /etc/motd\nA /etc/new.txt\n');
      expect(json(await g(['changes', '--json', containerId.slice(0, 12)]))).toEqual([
        { path: '/bin', kind: 'C' },
        { path: '/bin/sh', kind: 'D' },
        { path: '/etc', kind: 'C' },
        { path: '/etc/motd', kind: 'C' },
        { path: '/etc/new.txt', kind: 'A' },
      ]);
    });

    test('diff: the layer tar on stdout, or in a file', async () => {
      const r = await g(['diff', 'c1']);
      expect(r.code).toBe(0);
      diffTar = r.stdout;
      const entries = await tarEntries(diffTar);
      expect(entries.map((e) => [e.name, e.type])).toEqual([
        ['bin/', 'dir'],
        ['bin/.wh.sh', 'file'],
        ['etc/', 'dir'],
        ['etc/motd', 'file'],
        ['etc/new.txt', 'file'],
      ]);
      expect(entries.find((e) => e.name === 'etc/motd')!.body).toBe('hello\nmore\n');
      expect(entries.find((e) => e.name === 'etc/new.txt')!.body).toBe('new file\n');
      const file = path.join(root, '..', `${path.basename(root)}-diff.tar`);
      tmpDirs.push(file);
      const o = await g(['diff', '-o', file, 'c1']);
      expect(o).toMatchObject({ code: 0, out: '', err: '' });
      expect((await tarEntries(fs.readFileSync(file))).map((e) => e.name)).toEqual(entries.map((e) => e.name));
    });

    test('commit: a 2-layer image on the base', async () => {
      const r = await g(['commit', '-m', 'first change', 'c1', 'base:2']);
      expect(r.code).toBe(0);
      committedId = r.out.trim();
      expect(committedId).toMatch(/^sha256:[0-9a-f]{64}$/);
      const imgs = json<Array<{ id: string; references: string[]; diffIds: string[]; layers: string[]; parent?: string }>>(await g(['images', '--json']));
      const child = imgs.find((i) => i.id === committedId)!;
      expect(child).toMatchObject({ references: ['docker.io/library/base:2'], parent: baseId });
      expect(child.diffIds[0]).toBe(baseDiffId);
      expect(child.diffIds).toHaveLength(2);
      // overlay2's native diff is byte-stable; naive diffs stamp whiteouts with the time of the diff.
      if (driver === 'overlay2') expect(child.diffIds[1]).toBe(sha(diffTar));
      const layers = json<Array<{ chainId: string; parent: string | null }>>(await g(['layers', '--json']));
      expect(layers.map((l) => l.parent)).toEqual([null, baseDiffId]);
      expect(layers[1]!.chainId).toBe(child.layers[1]);
    });

    test('unmount (twice is fine)', async () => {
      const r = await g(['unmount', 'c1']);
      expect(r).toMatchObject({ code: 0, out: `${containerId}\n` });
      if (driver === 'overlay2') expect(mountsBelow(root)).not.toContain(mountPath);
      expect((await g(['umount', 'c1'])).code).toBe(0);
    });

    test('rmi keeps images that are in use: untag only, then a conflict that exits 1 with a hint', async () => {
      let r = await g(['rmi', 'base:1']);
      expect(r).toMatchObject({ code: 0, out: 'Untagged: base:1\n' });
      // The last reference of an image that a container and a child image use: untagged, the image stays.
      r = await g(['rmi', 'other/name:2']);
      expect(r).toMatchObject({ code: 0, out: 'Untagged: other/name:2\n' });
      r = await g(['rmi', baseId]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^graphdriver: error: image sha256:[0-9a-f]{64} is in use: image has 1 dependent child image\(s\)\nhint: /);
      expect(json<unknown[]>(await g(['images', '--json']))).toHaveLength(2);
    });

    test('errors: exit 1 for what does not exist, 2 for what cannot be valid', async () => {
      let r = await g(['mount', 'nope']);
      expect(r).toMatchObject({ code: 1, out: '' });
      expect(r.err).toBe('graphdriver: error: no such container: "nope"\nhint: `graphdriver ps` lists the containers\n');
      r = await g(['--json', 'changes', 'nope']);
      expect(r.code).toBe(1);
      expect(JSON.parse(r.err)).toEqual({ error: expect.objectContaining({ code: 'ERR_CONTAINER_NOT_FOUND', exitCode: 1 }) });
      r = await g(['create', 'nope:1']);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/no such image: "nope:1"/);
      r = await g(['mount', '../../etc']);
      expect(r.code).toBe(2);
      r = await g(['tag', 'base:2', 'Not Valid']);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^graphdriver: error: invalid reference "Not Valid"/);
      r = await g(['create', '--opt', 'size', 'base:2']);
      expect(r.code).toBe(2);
      r = await g(['--storage-opt', 'nosuchopt=1', 'info']);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/unknown storage option "nosuchopt"/);
    });

    test('rm, then rmi deletes the child and its now unused, untagged parent', async () => {
      let r = await g(['rm', 'c1']);
      expect(r).toMatchObject({ code: 0, out: 'c1\n' });
      expect(json(await g(['ps', '--json']))).toEqual([]);
      r = await g(['rmi', 'base:2']);
      expect(r).toMatchObject({ code: 0, out: `Untagged: base:2\nDeleted: ${committedId}\nDeleted: ${baseId}\n` });
      expect(json(await g(['images', '--json']))).toEqual([]);
      expect(json(await g(['layers', '--json']))).toEqual([]);
      expect(json(await g(['info', '--json']))).toMatchObject({ images: 0, layers: 0, containers: 0 });
      expect(mountsBelow(root)).toEqual([]);
    });
  });
}

describeIf(rootReason, 'graphdriver CLI: store lock, drivers, save and load', () => {
  test('a second process is told who holds the store; --lock-timeout waits for it', async () => {
    const root = tmpDir('gd-cli-lock-');
    let holder: ChildProcess | undefined;
    const first = gd(['--root', root, '--driver', 'vfs', 'import', '-', 'locked:1'], { keepStdinOpen: (c) => (holder = c) });
    // The import holds the store while it waits for its input.
    const lockFile = path.join(root, 'graphdriver.lock');
    for (let i = 0; i < 600 && !fs.existsSync(lockFile); i++) await new Promise((r) => setTimeout(r, 50));
    expect(fs.existsSync(lockFile)).toBe(true);
    const pid = holder!.pid!;
    let r = await gd(['--root', root, '--driver', 'vfs', 'images']);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `graphdriver: error: the store ${root} is in use by process ${pid} (graphdriver --root ${root} --driver vfs import - locked:1)\n` +
        `hint: wait for process ${pid} (graphdriver --root ${root} --driver vfs import - locked:1) to finish, or stop it; add --lock-timeout <seconds> to wait for the store automatically\n`,
    );
    r = await gd(['--json', '--root', root, '--driver', 'vfs', 'images']);
    expect(JSON.parse(r.err)).toEqual({ error: expect.objectContaining({ code: 'ERR_STORE_LOCKED', exitCode: 1 }) });
    const waiting = gd(['--root', root, '--driver', 'vfs', '--lock-timeout', '60', 'images', '-q']);
    holder!.stdin!.end(BASE_TAR);
    const [a, b] = await Promise.all([first, waiting]);
    expect(a.code).toBe(0);
    expect(b).toMatchObject({ code: 0, out: `${a.out.trim().slice(7, 19)}\n` });
    expect(fs.existsSync(lockFile)).toBe(false);
  });

  test('an unsupported driver: exit 1, and the drivers that do work with this root', async () => {
    const root = tmpDir('gd-cli-nodriver-');
    const onBtrfs = spawnSync('stat', ['-f', '-c', '%T', root], { encoding: 'utf8' }).stdout.trim() === 'btrfs';
    const r = await gd(['--root', root, '--driver', onBtrfs ? 'nosuch' : 'btrfs', 'info']);
    if (onBtrfs) {
      expect(r.code).toBe(2);
      return;
    }
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^graphdriver: error: the storage driver "btrfs" cannot run here: btrfs: .* is not on a btrfs filesystem/);
    expect(r.err).toMatch(new RegExp(`\\nhint: drivers that work with the root ${root}: (.+, )?vfs; choose one with --driver \\w+\\n$`));
    // Probing left nothing behind.
    expect(fs.readdirSync(root).filter((n) => n.startsWith('.driver-probe-'))).toEqual([]);
  });

  test('save, then load from a file and from stdin: plain progress lines on stderr, Docker’s result lines', async () => {
    const src = tmpDir('gd-cli-save-');
    const s = (args: string[], opts?: { input?: Buffer }): Promise<Result> => gd(['--root', src, '--driver', 'vfs', ...args], opts);
    const id = (await s(['import', '-', 'app:1'], { input: BASE_TAR })).out.trim();
    expect(id).toMatch(/^sha256:/);
    const saved = await s(['save', 'app:1']);
    expect(saved.code).toBe(0);
    const names = (await tarEntries(saved.stdout)).map((e) => e.name);
    expect(names).toContain('manifest.json');
    const file = path.join(src, 'app.tar');
    expect((await s(['save', '-o', file, 'app:1'])).code).toBe(0);
    expect(fs.readFileSync(file).equals(saved.stdout)).toBe(true);

    const line = /^(stdin|[0-9a-f]{12}): [a-z][a-z ]* \d+\/(\d+|\?)$/;
    const dst = tmpDir('gd-cli-load-');
    let r = await gd(['--root', dst, '--driver', 'vfs', 'load', '-i', file]);
    expect(r).toMatchObject({ code: 0, out: 'Loaded image: app:1\n' });
    const lines = r.err.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatch(line);
    expect(lines).toContain(`${sha(BASE_TAR).slice(7, 19)}: done ${BASE_TAR.length}/${BASE_TAR.length}`);
    expect(json<Array<{ id: string }>>(await gd(['--root', dst, '--driver', 'vfs', 'images', '--json'])).map((i) => i.id)).toEqual([id]);

    const dst2 = tmpDir('gd-cli-load-');
    r = await gd(['--root', dst2, '--driver', 'overlay2', 'load'], { input: saved.stdout });
    if (kernelHasFs('overlay')) {
      expect(r).toMatchObject({ code: 0, out: 'Loaded image: app:1\n' });
      const l2 = r.err.trimEnd().split('\n');
      for (const l of l2) expect(l).toMatch(line);
      expect(l2).toContain(`stdin: reading ${saved.stdout.length}/?`);
    }
    // Quiet: nothing on stderr; --json: the images.
    const dst3 = tmpDir('gd-cli-load-');
    r = await gd(['--root', dst3, '--driver', 'vfs', '--json', 'load', '-q', '-i', file]);
    expect(r.err).toBe('');
    expect(json<Array<{ id: string; references: string[] }>>(r)).toEqual([expect.objectContaining({ id, references: ['docker.io/library/app:1'] })]);
    // Not an image archive: exit 1 and nothing stored.
    r = await gd(['--root', dst3, '--driver', 'vfs', 'load', '-q'], { input: BASE_TAR });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^graphdriver: error: invalid archive: /);
  });

  /** Runs the command on a pseudo-terminal (util-linux `script`); resolves to what the terminal showed. */
  function onTerminal(args: string[]): Promise<Result> {
    const cmd = [bin, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    return new Promise((resolve, reject) => {
      const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { env: { ...process.env, GRAPHDRIVER_ADDON: ADDON }, stdio: ['pipe', 'pipe', 'pipe'] });
      children.add(child);
      const out: Buffer[] = [];
      child.stdout!.on('data', (c: Buffer) => out.push(c));
      child.stderr!.on('data', (c: Buffer) => out.push(c));
      child.on('error', reject);
      child.on('close', (code) => {
        children.delete(child);
        const stdout = Buffer.concat(out);
        resolve({ code, stdout, out: stdout.toString('utf8'), err: '' });
      });
      child.stdin!.end();
    });
  }

  (haveTool('script') ? test : test.skip)('on a terminal: progress bars drawn in place, and no tar written to it', async () => {
    const src = tmpDir('gd-cli-tty-');
    expect((await gd(['--root', src, '--driver', 'vfs', 'import', '-', 'app:1'], { input: BASE_TAR })).code).toBe(0);
    const file = path.join(src, 'app.tar');
    expect((await gd(['--root', src, '--driver', 'vfs', 'save', '-o', file, 'app:1'])).code).toBe(0);
    const dst = tmpDir('gd-cli-tty-');
    let r = await onTerminal(['--root', dst, '--driver', 'vfs', 'load', '-i', file]);
    expect(r.code).toBe(0);
    // cli-progress hides the cursor while drawing, redraws the line in place, and shows the cursor again.
    expect(r.out).toContain('\x1b[?25l');
    expect(r.out).toContain('\x1b[?25h');
    expect(r.out).toContain(`${sha(BASE_TAR).slice(7, 19)}: Loaded`);
    expect(r.out).not.toMatch(/: done \d+\//);
    expect(r.out).toMatch(/Loaded image: app:1\r?\n$/);
    r = await onTerminal(['--root', src, '--driver', 'vfs', 'save', 'app:1']);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/graphdriver: error: refusing to write a tar archive to a terminal\r?\nhint: use -o <file>/);
  });
});
