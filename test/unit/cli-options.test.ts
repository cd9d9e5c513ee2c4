/**
 * The `graphdriver` command line, in-process with a fake store: global options (before and after the command),
 * defaults, value checks, and the usage errors that exit with 2 before the store is touched.
 */
import { PassThrough } from 'node:stream';

import type { CliContext, CliStorage } from '../../lib/cli/context';
import { UsageError } from '../../lib/cli/errors';
import { run } from '../../lib/cli/main';
import { collect, defaultRoot, keyValues, parsePlatform, parseSeconds, resolveGlobals, splitKeyValue, type GlobalOptions } from '../../lib/cli/options';

/** A context whose store records the options it was opened with and then fails (nothing else is needed here). */
function harness(extra: Partial<CliContext> = {}): { ctx: Partial<CliContext>; opened: GlobalOptions[]; out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => (out += c.toString()));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const opened: GlobalOptions[] = [];
  const store = {
    root: '/r',
    listImages: async () => [],
    listLayers: async () => [],
    listContainers: async () => [],
    driver: { name: 'fake', status: async () => [] },
  } as unknown as CliStorage;
  const ctx: Partial<CliContext> = {
    env: {},
    uid: 1000,
    home: '/home/u',
    cwd: '/work/dir',
    io: { stdin: Object.assign(new PassThrough(), { isTTY: true }), stdout, stderr },
    openStorage: async (g) => {
      opened.push(g);
      return store;
    },
    probeDrivers: async () => [],
    now: () => new Date('2024-01-01T00:00:00Z'),
    onInterrupt: () => () => undefined,
    ...extra,
  };
  return { ctx, opened, out: () => out, err: () => err };
}

describe('default store root', () => {
  test('root uses /var/lib/graphdriver', () => {
    expect(defaultRoot({ env: { XDG_DATA_HOME: '/x' }, uid: 0, home: '/root' })).toBe('/var/lib/graphdriver');
  });
  test('other users use ~/.local/share/graphdriver, or $XDG_DATA_HOME when it is absolute', () => {
    expect(defaultRoot({ env: {}, uid: 1000, home: '/home/u' })).toBe('/home/u/.local/share/graphdriver');
    expect(defaultRoot({ env: { XDG_DATA_HOME: '/data' }, uid: 1000, home: '/home/u' })).toBe('/data/graphdriver');
    // The XDG spec: relative values are invalid and ignored.
    expect(defaultRoot({ env: { XDG_DATA_HOME: 'rel' }, uid: 1000, home: '/home/u' })).toBe('/home/u/.local/share/graphdriver');
  });
});

describe('option values', () => {
  const env = { env: {}, uid: 0, home: '/root', cwd: '/cwd' };

  test('resolveGlobals resolves the root against the working directory and checks every value', () => {
    expect(resolveGlobals({}, env)).toEqual({ root: '/var/lib/graphdriver', storageOpts: [], json: false, lockTimeoutMs: 0 });
    expect(resolveGlobals({ root: 'store', driver: 'vfs', storageOpt: ['size=1G'], json: true, lockTimeout: '2.5' }, env)).toEqual({
      root: '/cwd/store',
      driver: 'vfs',
      storageOpts: ['size=1G'],
      json: true,
      lockTimeoutMs: 2500,
    });
    expect(() => resolveGlobals({ storageOpt: ['size'] }, env)).toThrow(UsageError);
    expect(() => resolveGlobals({ storageOpt: ['=1'] }, env)).toThrow(/not key=value/);
    expect(() => resolveGlobals({ driver: '../x' }, env)).toThrow(/not a driver name/);
    expect(() => resolveGlobals({ root: '  ' }, env)).toThrow(/--root needs a directory/);
    expect(() => resolveGlobals({ lockTimeout: '-1' }, env)).toThrow(/not a number of seconds/);
  });

  test('key=value lists, seconds, platforms', () => {
    expect(collect('b', collect('a', undefined))).toEqual(['a', 'b']);
    expect(splitKeyValue('a=b=c', '--opt')).toEqual(['a', 'b=c']);
    expect(keyValues(['size=1G', 'x=1', 'size=2G'], '--opt')).toEqual({ size: '2G', x: '1' });
    expect(() => keyValues(['novalue'], '--opt')).toThrow(/--opt "novalue" is not key=value/);
    expect(parseSeconds('0', 'x')).toBe(0);
    expect(parseSeconds('1.25', 'x')).toBe(1250);
    expect(() => parseSeconds('soon', 'x')).toThrow(UsageError);
    expect(parsePlatform('linux/amd64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    for (const bad of ['linux', 'linux/', 'a/b/c/d', 'linux/AMD64', 'linux/am d64']) expect(() => parsePlatform(bad)).toThrow(UsageError);
  });
});

describe('global options on the command line', () => {
  test('before the command', async () => {
    const h = harness();
    const code = await run(['--root', 'store', '--driver', 'vfs', '--storage-opt', 'size=1G', '--storage-opt', 'x=y', '--lock-timeout', '3', 'info'], h.ctx);
    expect(code).toBe(0);
    expect(h.opened).toEqual([{ root: '/work/dir/store', driver: 'vfs', storageOpts: ['size=1G', 'x=y'], json: false, lockTimeoutMs: 3000 }]);
  });

  test('after the command, and the default root of a non-root user', async () => {
    const h = harness();
    expect(await run(['info', '--json', '--storage-opt', 'a=b'], h.ctx)).toBe(0);
    expect(h.opened).toEqual([{ root: '/home/u/.local/share/graphdriver', storageOpts: ['a=b'], json: true, lockTimeoutMs: 0 }]);
    expect(JSON.parse(h.out())).toEqual({ root: '/r', driver: 'fake', driverStatus: [], images: 0, layers: 0, containers: 0 });
  });

  test('root as uid 0', async () => {
    const h = harness({ uid: 0 });
    expect(await run(['info'], h.ctx)).toBe(0);
    expect(h.opened[0]?.root).toBe('/var/lib/graphdriver');
  });
});

describe('usage errors exit with 2 and leave the store alone', () => {
  const cases: Array<[string[], RegExp]> = [
    [['nope'], /unknown command 'nope'/],
    [['imagse'], /unknown command 'imagse'[\s\S]*images/],
    [['tag', 'a'], /missing required argument 'target'/],
    [['tag', 'a', 'b', 'c'], /too many arguments/],
    [['images', '--bogus'], /unknown option '--bogus'/],
    [['--storage-opt', 'novalue', 'info'], /--storage-opt "novalue" is not key=value/],
    [['--driver', 'Not/A/Name', 'info'], /not a driver name/],
    [['--lock-timeout', 'forever', 'info'], /not a number of seconds/],
    [['tag', 'busybox', 'UPPER'], /invalid reference "UPPER"/],
    [['pull', '--platform', 'linux', 'busybox'], /--platform "linux" is not os\/arch/],
    [['create', '--opt', 'size', 'busybox'], /--opt "size" is not key=value/],
    [['import', '-'], /stdin is a terminal/],
    [['load'], /stdin is a terminal/],
    [[], /no command given/],
  ];
  test.each(cases)('%j', async (argv, message) => {
    const h = harness();
    expect(await run(argv, h.ctx)).toBe(2);
    expect(h.err()).toMatch(message);
    expect(h.err()).toMatch(/^graphdriver: error: |Usage: graphdriver/);
    expect(h.opened).toEqual([]);
  });

  test('under --json the usage error is one JSON document on stderr', async () => {
    const h = harness();
    expect(await run(['--json', 'tag', 'a'], h.ctx)).toBe(2);
    const doc = JSON.parse(h.err()) as { error: { code: string; message: string; exitCode: number } };
    expect(doc.error).toMatchObject({ code: 'ERR_USAGE', exitCode: 2, message: "missing required argument 'target'" });
    expect(h.out()).toBe('');
  });

  test('a tar is not written to a terminal', async () => {
    const stdout = Object.assign(new PassThrough(), { isTTY: true });
    const h = harness();
    h.ctx.io = { ...h.ctx.io!, stdout };
    expect(await run(['diff', 'c1'], h.ctx)).toBe(2);
    expect(h.err()).toMatch(/refusing to write a tar archive to a terminal\nhint: use -o <file>/);
    expect(await run(['save', 'busybox'], h.ctx)).toBe(2);
    expect(h.opened).toEqual([]);
  });
});

describe('help and version exit with 0', () => {
  test('--help prints usage, the commands and the exit codes on stdout', async () => {
    const h = harness();
    expect(await run(['--help'], h.ctx)).toBe(0);
    for (const c of ['info', 'pull', 'push', 'load', 'save', 'import', 'images', 'tag', 'rmi', 'layers', 'create', 'mount', 'unmount', 'changes', 'diff', 'commit', 'rm', 'ps']) {
      expect(h.out()).toMatch(new RegExp(`\\n  ${c}\\b`));
    }
    expect(h.out()).toMatch(/Exit status: 0 success, 1 the operation failed, 2 the command line is wrong/);
    expect(h.out()).toMatch(/--root <dir>\s+store root \(default: \/home\/u\/\.local\/share\/graphdriver\)/);
  });

  test('command help and version', async () => {
    const h = harness();
    expect(await run(['rmi', '--help'], h.ctx)).toBe(0);
    expect(h.out()).toMatch(/Usage: graphdriver rmi \[options\] <image\.\.\.>/);
    expect(h.out()).toMatch(/--no-prune/);
    const v = harness();
    expect(await run(['--version'], v.ctx)).toBe(0);
    expect(v.out()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
