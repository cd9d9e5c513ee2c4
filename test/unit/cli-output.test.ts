/**
 * What the `graphdriver` command prints: Docker's units, tables, change lines, progress (plain lines, terminal
 * bars) and the error messages with their exit codes.
 */
import { PassThrough } from 'node:stream';

import { ChangeKind } from '../../lib/archive/change';
import { NotSupportedError } from '../../lib/drivers/errors';
import { GraphdriverError, InvalidArchiveError } from '../../lib/errors';
import { CliError, diagnose, ExitCode, formatDiagnosis, jsonDiagnosis, PartialFailure, UsageError } from '../../lib/cli/errors';
import { changesJson, createdAgo, familiarRef, formatChanges, formatTable, humanDuration, humanSize, repoTag, shortId, showId, toJson } from '../../lib/cli/output';
import { LOAD_LABELS, layerLabel, phaseLabel, plainLine, PlainProgress, progressMode, PULL_LABELS, PUSH_LABELS, renderBar, TtyProgress, ttyLine } from '../../lib/cli/progress';
import { ContainerNotFoundError, ImageInUseError, ImageNotFoundError, InvalidReferenceError, StoreLockedError } from '../../lib/storage/errors';

function sink(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let s = '';
  stream.on('data', (c: Buffer) => (s += c.toString()));
  return { stream, text: () => s };
}

describe('units', () => {
  test('sizes as Docker prints them (powers of 1000, 3 significant digits)', () => {
    expect(humanSize(0)).toBe('0B');
    expect(humanSize(23)).toBe('23B');
    expect(humanSize(999)).toBe('999B');
    expect(humanSize(1000)).toBe('1kB');
    expect(humanSize(1234)).toBe('1.23kB');
    expect(humanSize(1_234_567)).toBe('1.23MB');
    expect(humanSize(72_800_000)).toBe('72.8MB');
    expect(humanSize(999_999)).toBe('1MB');
    expect(humanSize(5 * 1000 ** 3)).toBe('5GB');
    expect(humanSize(-1)).toBe('N/A');
  });

  test('durations as Docker prints them', () => {
    const s = 1000;
    const h = 3600 * s;
    expect(humanDuration(500)).toBe('Less than a second');
    expect(humanDuration(s)).toBe('1 second');
    expect(humanDuration(42 * s)).toBe('42 seconds');
    expect(humanDuration(61 * s)).toBe('About a minute');
    expect(humanDuration(59 * 60 * s)).toBe('59 minutes');
    expect(humanDuration(h)).toBe('About an hour');
    expect(humanDuration(5 * h)).toBe('5 hours');
    expect(humanDuration(72 * h)).toBe('3 days');
    expect(humanDuration(24 * 21 * h)).toBe('3 weeks');
    expect(humanDuration(24 * 90 * h)).toBe('3 months');
    expect(humanDuration(24 * 365 * 3 * h)).toBe('3 years');
    const now = new Date('2024-01-01T12:00:00Z');
    expect(createdAgo('2024-01-01T09:00:00Z', now)).toBe('3 hours ago');
    expect(createdAgo(undefined, now)).toBe('N/A');
    expect(createdAgo('0001-01-01T00:00:00Z', now)).toBe('N/A');
  });

  test('ids and references', () => {
    const id = `sha256:${'ab'.repeat(32)}`;
    expect(shortId(id)).toBe('abababababab');
    expect(shortId('0123456789abcdef')).toBe('0123456789ab');
    expect(showId(id, true)).toBe(id);
    expect(familiarRef('docker.io/library/busybox:latest')).toBe('busybox:latest');
    expect(familiarRef('docker.io/user/app:1')).toBe('user/app:1');
    expect(familiarRef('localhost:5000/x/y:2')).toBe('localhost:5000/x/y:2');
    expect(repoTag('docker.io/library/busybox:1.36')).toEqual({ repository: 'busybox', tag: '1.36' });
    const digest = `sha256:${'1'.repeat(64)}`;
    expect(repoTag(`docker.io/library/busybox@${digest}`)).toEqual({ repository: 'busybox', tag: '<none>', digest });
  });
});

describe('tables, changes and JSON', () => {
  test('columns are aligned with 3 spaces and lines carry no trailing blanks', () => {
    expect(formatTable(['A', 'LONG HEADER', 'C'], [['xxxxx', 'y', ''], ['1', '22', '333']])).toBe(
      'A       LONG HEADER   C\n' + 'xxxxx   y\n' + '1       22            333\n',
    );
    expect(formatTable(['ONLY'], [])).toBe('ONLY\n');
  });

  test('changes as `docker diff` prints them', () => {
    const changes = [
      { path: '/bin', kind: ChangeKind.Modify },
      { path: '/bin/sh', kind: ChangeKind.Delete },
      { path: '/etc/new', kind: ChangeKind.Add },
    ];
    expect(formatChanges(changes)).toBe('C /bin\nD /bin/sh\nA /etc/new\n');
    expect(changesJson(changes)).toEqual([
      { path: '/bin', kind: 'C' },
      { path: '/bin/sh', kind: 'D' },
      { path: '/etc/new', kind: 'A' },
    ]);
    expect(formatChanges([])).toBe('');
    expect(toJson({ a: [1] })).toBe('{\n  "a": [\n    1\n  ]\n}\n');
  });
});

describe('progress', () => {
  const digest = `sha256:${'3f4d90098f5b'.padEnd(64, '0')}`;

  test('plain lines: `<layer>: <phase> <bytes>/<total>`', () => {
    expect(plainLine({ id: digest, phase: 'downloading', bytes: 1024, total: 4096 })).toBe('3f4d90098f5b: downloading 1024/4096');
    expect(plainLine({ id: 'stdin', phase: 'reading', bytes: 10 })).toBe('stdin: reading 10/?');
    expect(plainLine({ id: digest, phase: 'already exists', bytes: 0, total: Number.NaN })).toBe('3f4d90098f5b: already exists 0/?');
    expect(layerLabel('x'.repeat(50))).toBe(`${'x'.repeat(37)}...`);
  });

  test('plain reporter: every phase change, the end of a phase, and at most one line a second in between', () => {
    const out = sink();
    let now = 0;
    const p = new PlainProgress(out.stream, 1000, () => now);
    p.update({ id: digest, phase: 'waiting', bytes: 0, total: 100 });
    p.update({ id: digest, phase: 'downloading', bytes: 0, total: 100 });
    now = 100;
    p.update({ id: digest, phase: 'downloading', bytes: 10, total: 100 }); // too soon
    now = 1200;
    p.update({ id: digest, phase: 'downloading', bytes: 50, total: 100 });
    now = 1300;
    p.update({ id: digest, phase: 'downloading', bytes: 100, total: 100 }); // end of phase
    p.update({ id: digest, phase: 'downloading', bytes: 100, total: 100 }); // repeated
    p.update({ id: 'other', phase: 'downloading', bytes: 1, total: 2 });
    p.update({ id: digest, phase: 'done', bytes: 100, total: 100 });
    p.update({ id: 'stdin', phase: 'reading', bytes: 10 });
    p.update({ id: 'stdin', phase: 'reading', bytes: 20 }); // held back, printed at the end
    p.stop();
    expect(out.text()).toBe(
      [
        '3f4d90098f5b: waiting 0/100',
        '3f4d90098f5b: downloading 0/100',
        '3f4d90098f5b: downloading 50/100',
        '3f4d90098f5b: downloading 100/100',
        'other: downloading 1/2',
        '3f4d90098f5b: done 100/100',
        'stdin: reading 10/?',
        'stdin: reading 20/?',
        '',
      ].join('\n'),
    );
  });

  test('terminal lines look like Docker’s', () => {
    expect(renderBar(0, 100)).toBe(`[>${' '.repeat(50)}]`);
    expect(renderBar(50, 100)).toBe(`[${'='.repeat(25)}>${' '.repeat(25)}]`);
    expect(renderBar(100, 100)).toBe(`[${'='.repeat(50)}>]`);
    expect(ttyLine({ id: '3f4d90098f5b', phase: 'downloading', bytes: 12_500_000, total: 58_200_000 }, PULL_LABELS)).toBe(
      `3f4d90098f5b: Downloading [${'='.repeat(10)}>${' '.repeat(40)}] 12.5MB/58.2MB`,
    );
    expect(ttyLine({ id: digest, phase: 'done', bytes: 1, total: 1 }, PULL_LABELS)).toBe('3f4d90098f5b: Pull complete');
    expect(ttyLine({ id: digest, phase: 'already exists', bytes: 0 }, PULL_LABELS)).toBe('3f4d90098f5b: Already exists');
    expect(ttyLine({ id: digest, phase: 'already exists', bytes: 0, total: 0 }, PUSH_LABELS)).toBe('3f4d90098f5b: Layer already exists');
    expect(ttyLine({ id: digest, phase: 'preparing', bytes: 0, total: 0 }, PUSH_LABELS)).toBe('3f4d90098f5b: Preparing');
    expect(ttyLine({ id: digest, phase: 'pushing', bytes: 500, total: 1000 }, PUSH_LABELS)).toBe(`3f4d90098f5b: Pushing [${'='.repeat(25)}>${' '.repeat(25)}] 500B/1kB`);
    expect(ttyLine({ id: digest, phase: 'loading', bytes: 1000, total: 1000 }, LOAD_LABELS)).toBe(`3f4d90098f5b: Loading layer [${'='.repeat(50)}>] 1kB/1kB`);
    expect(ttyLine({ id: 'stdin', phase: 'reading', bytes: 2000 }, LOAD_LABELS)).toBe('stdin: Reading 2kB');
    expect(phaseLabel('done', PUSH_LABELS)).toBe('Pushed');
    expect(phaseLabel('extracting', PULL_LABELS)).toBe('Extracting');
  });

  test('mode: bars on a terminal, lines otherwise, nothing for --json or --quiet', () => {
    const tty = Object.assign(new PassThrough(), { isTTY: true });
    const pipe = new PassThrough();
    expect(progressMode(tty, { json: false, quiet: false })).toBe('tty');
    expect(progressMode(pipe, { json: false, quiet: false })).toBe('plain');
    expect(progressMode(tty, { json: true, quiet: false })).toBe('none');
    expect(progressMode(pipe, { json: false, quiet: true })).toBe('none');
  });

  test('terminal bars are drawn through cli-progress, one line per layer', () => {
    const out = sink();
    const tty = Object.assign(out.stream, { isTTY: true, columns: 200, rows: 40, cursorTo: () => true, moveCursor: () => true, clearLine: () => true, clearScreenDown: () => true });
    const p = new TtyProgress(tty, PULL_LABELS);
    p.update({ id: digest, phase: 'downloading', bytes: 10, total: 100 });
    p.update({ id: `sha256:${'a'.repeat(64)}`, phase: 'waiting', bytes: 0 });
    p.update({ id: digest, phase: 'done', bytes: 100, total: 100 });
    p.update({ id: 'stdin', phase: 'reading', bytes: 10 });
    p.update({ id: 'stdin', phase: 'reading', bytes: 20 }); // held back, printed at the end
    p.stop();
    expect(out.text()).toContain('3f4d90098f5b: Pull complete');
    expect(out.text()).toContain('aaaaaaaaaaaa: Waiting');
  });
});

describe('errors: exit codes and what to do', () => {
  test('usage errors exit 2 with their hint; CLI errors keep their code', () => {
    expect(diagnose(new UsageError('bad', 'do this'))).toEqual({ exitCode: 2, code: 'ERR_USAGE', message: 'bad', hint: 'do this' });
    expect(diagnose(new CliError('nope', 'ERR_X'))).toEqual({ exitCode: 1, code: 'ERR_X', message: 'nope' });
    expect(new PartialFailure(1, 3, ExitCode.USAGE).exitCode).toBe(2);
  });

  test('malformed input is a usage error; failed operations exit 1', () => {
    expect(diagnose(new InvalidReferenceError('UP', 'x')).exitCode).toBe(2);
    expect(diagnose(new GraphdriverError('ERR_INVALID_ID', 'x')).exitCode).toBe(2);
    expect(diagnose(new GraphdriverError('ERR_INVALID_OPTION', 'x')).exitCode).toBe(2);
    expect(diagnose(new GraphdriverError('ERR_DRIVER_UNKNOWN', 'x')).exitCode).toBe(2);
    expect(diagnose(new ImageNotFoundError('busybox'))).toMatchObject({ exitCode: 1, code: 'ERR_IMAGE_NOT_FOUND', hint: expect.stringContaining('graphdriver images') });
    expect(diagnose(new ContainerNotFoundError('c')).hint).toContain('graphdriver ps');
    expect(diagnose(new ImageInUseError('sha256:x', 'used by container(s) abc')).hint).toContain('rmi --force');
    expect(diagnose(new InvalidArchiveError('truncated'))).toMatchObject({ exitCode: 1, message: 'invalid archive: truncated' });
    expect(diagnose(new Error('boom'))).toEqual({ exitCode: 1, code: 'ERR_UNEXPECTED', message: 'boom' });
    expect(diagnose('str')).toEqual({ exitCode: 1, code: 'ERR_UNEXPECTED', message: 'str' });
  });

  test('a locked store names the process holding it and how to wait', () => {
    const d = diagnose(new StoreLockedError('/r/graphdriver.lock', process.pid, 0), { root: '/r' });
    expect(d.exitCode).toBe(1);
    expect(d.message).toMatch(new RegExp(`^the store /r is in use by process ${process.pid} \\(.+\\)$`));
    expect(d.hint).toMatch(/--lock-timeout <seconds>/);
    expect(diagnose(new StoreLockedError('/r/graphdriver.lock', null, 0), { root: '/r' }).message).toBe('the store /r is in use by another user');
  });

  test('an unsupported driver lists the drivers that work here', () => {
    const e = new NotSupportedError('btrfs: /r is not on a btrfs filesystem');
    expect(diagnose(e, { root: '/r', driver: 'btrfs', workingDrivers: ['overlay2', 'vfs'] })).toEqual({
      exitCode: 1,
      code: 'ERR_DRIVER_NOT_SUPPORTED',
      message: 'the storage driver "btrfs" cannot run here: btrfs: /r is not on a btrfs filesystem',
      hint: 'drivers that work with the root /r: overlay2, vfs; choose one with --driver overlay2',
    });
    expect(diagnose(e, { root: '/r', workingDrivers: [] }).hint).toMatch(/no driver works with the root \/r/);
  });

  test('permissions, full disks and quotas', () => {
    const eacces = Object.assign(new Error("EACCES: permission denied, mkdir '/var/lib/x'"), { code: 'EACCES', path: '/var/lib/x' });
    expect(diagnose(eacces, { uid: 1000 })).toMatchObject({ exitCode: 1, message: expect.stringMatching(/^permission denied: \/var\/lib\/x/), hint: expect.stringMatching(/run as root/) });
    expect(diagnose(eacces, { uid: 0 }).hint).toMatch(/check the permissions/);
    expect(diagnose(Object.assign(new Error('x'), { code: 'ENOSPC' }), { root: '/r' }).hint).toMatch(/filesystem of \/r is full/);
    expect(diagnose(Object.assign(new Error('x'), { code: 'UNKNOWN', errno: -122 }))).toMatchObject({ code: 'EDQUOT', hint: 'a disk quota was exceeded' });
    expect(diagnose(Object.assign(new Error('x'), { code: 'ENOENT', path: '/in.tar' })).message).toBe('no such file or directory: /in.tar');
  });

  test('printed forms', () => {
    const d = { exitCode: ExitCode.FAILED, code: 'ERR_X', message: 'it broke', hint: 'fix it' } as const;
    expect(formatDiagnosis(d)).toBe('graphdriver: error: it broke\nhint: fix it\n');
    expect(formatDiagnosis({ exitCode: 1, code: 'E', message: 'm' })).toBe('graphdriver: error: m\n');
    expect(JSON.parse(jsonDiagnosis(d))).toEqual({ error: { code: 'ERR_X', message: 'it broke', exitCode: 1, hint: 'fix it' } });
  });
});
