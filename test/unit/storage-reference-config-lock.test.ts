/**
 * Reference normalisation (Docker's distribution/reference rules), image config helpers, and the store lock file.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { childConfig, goArch, goJson, goTime, importConfig, parseImageConfig, serializeConfig } from '../../lib/image/config';
import { familiarString, normalizeReference, parseReference } from '../../lib/image/reference';
import { EMPTY_LAYER_DIFF_ID } from '../../lib/layer/digest';
import { holderAlive, parseLockContent, processStartTime, StoreLock } from '../../lib/storage/lock';
import { makeTmp, removeTmp } from '../support/tmp';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

describe('references', () => {
  test.each([
    ['busybox', 'docker.io/library/busybox:latest', 'busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36', 'busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest', 'busybox:latest'],
    ['docker.io/busybox', 'docker.io/library/busybox:latest', 'busybox:latest'],
    ['index.docker.io/library/busybox:x', 'docker.io/library/busybox:x', 'busybox:x'],
    ['user/app', 'docker.io/user/app:latest', 'user/app:latest'],
    ['localhost/app', 'localhost/app:latest', 'localhost/app:latest'],
    ['localhost:5000/a/b:v1', 'localhost:5000/a/b:v1', 'localhost:5000/a/b:v1'],
    ['quay.io/org/img:3.1-rc_2', 'quay.io/org/img:3.1-rc_2', 'quay.io/org/img:3.1-rc_2'],
    ['Example.COM/app', 'Example.COM/app:latest', 'Example.COM/app:latest'],
    [`busybox@${D1}`, `docker.io/library/busybox@${D1}`, `busybox@${D1}`],
    [`busybox:tag@${D1}`, `docker.io/library/busybox@${D1}`, `busybox@${D1}`],
    ['a.b-c/e__f---g.h', 'a.b-c/e__f---g.h:latest', 'a.b-c/e__f---g.h:latest'],
    ['[::1]:5000/x', '[::1]:5000/x:latest', '[::1]:5000/x:latest'],
  ])('%s → %s', (input, normalized, familiar) => {
    expect(normalizeReference(input)).toBe(normalized);
    expect(familiarString(parseReference(normalized))).toBe(familiar);
  });

  test.each([
    ['', 'empty'],
    ['Busybox', 'lowercase'],
    ['busybox:', 'invalid tag'],
    ['busybox:-x', 'invalid tag'],
    [`busybox:${'a'.repeat(129)}`, 'invalid tag'],
    ['../../etc/passwd', 'invalid registry domain'],
    ['a_b.c/x', 'invalid registry domain'],
    ['x/../y', 'invalid repository name'],
    ['a//b', 'invalid repository name'],
    ['/abs', 'invalid repository name'],
    ['a/b/', 'invalid repository name'],
    ['a b', 'invalid'],
    ['a\nb', 'invalid'],
    ['busybox@sha256:abc', 'invalid digest'],
    [`busybox@md5:${'a'.repeat(32)}`, 'unsupported digest'],
    ['e'.repeat(64), '64-byte hexadecimal'],
    [`x/${'a'.repeat(260)}`, 'longer than 255'],
    ['-x', 'invalid'],
  ])('%j is refused (%s)', (input, why) => {
    expect(() => normalizeReference(input)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_REFERENCE', message: expect.stringContaining(why) }));
  });
});

describe('image configs', () => {
  test('goTime trims fractional zeros like Go RFC3339Nano', () => {
    expect(goTime(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 120)))).toBe('2024-01-02T03:04:05.12Z');
    expect(goTime(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 0)))).toBe('2024-01-02T03:04:05Z');
  });

  test('JSON as Go writes it: sorted top-level keys, HTML escaped', () => {
    expect(goJson({ a: '<&>' })).toBe('{"a":"\\u003c\\u0026\\u003e"}');
    const bytes = serializeConfig({ rootfs: { type: 'layers', diff_ids: [D1] }, os: 'linux', architecture: 'amd64', config: { Z: 1, A: 2 } });
    expect(bytes.toString()).toBe(`{"architecture":"amd64","config":{"Z":1,"A":2},"os":"linux","rootfs":{"type":"layers","diff_ids":["${D1}"]}}`);
  });

  test('Go architecture names', () => {
    expect(goArch('x64')).toBe('amd64');
    expect(goArch('arm64')).toBe('arm64');
    expect(goArch('ia32')).toBe('386');
    expect(goArch('s390x')).toBe('s390x');
  });

  test('import config', () => {
    const c = importConfig(D1, { created: new Date(Date.UTC(2020, 1, 1)), architecture: 'arm64', variant: 'v8', message: 'hi', config: { Cmd: ['/bin/sh'] } });
    expect(c).toEqual({
      architecture: 'arm64',
      variant: 'v8',
      os: 'linux',
      created: '2020-02-01T00:00:00Z',
      comment: 'hi',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [D1] },
      history: [{ created: '2020-02-01T00:00:00Z', created_by: 'graphdriver import', comment: 'hi' }],
    });
  });

  test('child config: one more diffID and history entry; an empty layer adds none', () => {
    const parent = importConfig(D1, { created: new Date(0), architecture: 'amd64', config: { Env: ['A=1'] } });
    const created = new Date(Date.UTC(2021, 0, 1));
    const c = childConfig(parent, { diffId: D2, containerId: 'c'.repeat(64), comment: 'msg', author: 'me', created });
    expect(c.rootfs.diff_ids).toEqual([D1, D2]);
    expect(c.history).toEqual([...parent.history!, { created: '2021-01-01T00:00:00Z', author: 'me', created_by: 'graphdriver commit', comment: 'msg' }]);
    expect(c.container).toBe('c'.repeat(64));
    expect(c.config).toEqual({ Env: ['A=1'] });
    expect(c.container_config).toEqual({ Env: ['A=1'] });
    expect(c.author).toBe('me');
    expect(c.architecture).toBe('amd64');
    const e = childConfig(parent, { diffId: EMPTY_LAYER_DIFF_ID, containerId: 'c'.repeat(64), created });
    expect(e.rootfs.diff_ids).toEqual([D1]);
    expect(e.history![1]).toEqual({ created: '2021-01-01T00:00:00Z', created_by: 'graphdriver commit', empty_layer: true });
  });

  test('parseImageConfig refuses what it cannot use', () => {
    expect(() => parseImageConfig('nope')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_IMAGE_CONFIG' }));
    expect(() => parseImageConfig('[]')).toThrow(/not a JSON object/);
    expect(() => parseImageConfig('{}')).toThrow(/missing rootfs/);
    expect(() => parseImageConfig('{"rootfs":{"type":"x","diff_ids":[]}}')).toThrow(/unsupported rootfs type/);
    expect(() => parseImageConfig('{"rootfs":{"type":"layers","diff_ids":["../x"]}}')).toThrow(/sha256 digests/);
    expect(parseImageConfig(`{"rootfs":{"type":"layers","diff_ids":["${D1}"]},"x":1}`)).toEqual({ rootfs: { type: 'layers', diff_ids: [D1] }, x: 1 });
  });
});

describe('store lock', () => {
  let tmp: string;
  beforeEach(() => (tmp = makeTmp('gd-lock-')));
  afterEach(() => removeTmp(tmp));

  test('lock content and liveness', () => {
    expect(parseLockContent('123 456\n')).toEqual({ pid: 123, startTime: 456 });
    expect(parseLockContent('123\n')).toEqual({ pid: 123, startTime: null });
    expect(parseLockContent('123 -\n')).toEqual({ pid: 123, startTime: null });
    expect(parseLockContent('x')).toBeNull();
    expect(parseLockContent('0 1')).toBeNull();
    const own = { pid: process.pid, startTime: processStartTime(process.pid) };
    expect(holderAlive(own)).toBe(true);
    expect(holderAlive({ pid: process.pid, startTime: (own.startTime ?? 0) + 1 })).toBe(false);
  });

  test('a second holder gets ERR_STORE_LOCKED naming the holder; release frees it', async () => {
    const file = path.join(tmp, 'graphdriver.lock');
    const a = await StoreLock.acquire(file);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${process.pid} ${processStartTime(process.pid)}\n`);
    await expect(StoreLock.acquire(file)).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED', holderPid: process.pid });
    await a.release();
    expect(fs.existsSync(file)).toBe(false);
    const b = await StoreLock.acquire(file);
    await b.release();
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  test('waiting: the lock is taken once the holder releases it', async () => {
    const file = path.join(tmp, 'graphdriver.lock');
    const a = await StoreLock.acquire(file);
    const waiting = StoreLock.acquire(file, { timeoutMs: 5000, pollMs: 10 });
    setTimeout(() => void a.release(), 100);
    const b = await waiting;
    expect(fs.readFileSync(file, 'utf8')).toContain(String(process.pid));
    await b.release();
  });

  test('waiting is bounded', async () => {
    const file = path.join(tmp, 'graphdriver.lock');
    const a = await StoreLock.acquire(file);
    const t0 = Date.now();
    await expect(StoreLock.acquire(file, { timeoutMs: 150, pollMs: 10 })).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    await a.release();
  });

  test('a lock left by a dead process is taken over', async () => {
    const file = path.join(tmp, 'graphdriver.lock');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    fs.writeFileSync(file, `${dead} 1\n`);
    // Its half-done attempts are swept too; a live process's are not.
    fs.writeFileSync(`${file}.${dead}.abc123.tmp`, '');
    fs.writeFileSync(`${file}.${process.pid}.def456.tmp`, '');
    const l = await StoreLock.acquire(file);
    expect(fs.readFileSync(file, 'utf8')).toContain(String(process.pid));
    expect(fs.readdirSync(tmp).sort()).toEqual(['graphdriver.lock', `graphdriver.lock.${process.pid}.def456.tmp`]);
    await l.release();
  });

  test('a lock whose pid was reused by another process (other start time) is stale', async () => {
    const file = path.join(tmp, 'graphdriver.lock');
    fs.writeFileSync(file, `1 999999999999\n`);
    const l = await StoreLock.acquire(file);
    await l.release();
  });

  test('an unreadable lock is stale only once old', async () => {
    const file = path.join(tmp, 'graphdriver.lock');
    fs.writeFileSync(file, 'garbage');
    await expect(StoreLock.acquire(file)).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED', holderPid: null });
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(file, old, old);
    const l = await StoreLock.acquire(file);
    await l.release();
  });
});
