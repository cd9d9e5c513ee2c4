import * as fs from 'node:fs';
import * as path from 'node:path';

import type { Driver } from '../../lib/drivers/driver';
import { GraphdriverError } from '../../lib/errors';
import { NotSupportedError, PrerequisitesError, InvalidIdError, NotMountedError, InvalidOptionError } from '../../lib/drivers/errors';
import { KeyedLock } from '../../lib/drivers/keyed-lock';
import { checkLayerId, checkParentId } from '../../lib/drivers/layer-id';
import { RefCounter } from '../../lib/drivers/ref-counter';
import { driverPriority, newDriver, registerDriver } from '../../lib/drivers/registry';
import { parseBool, parseSize, parseStorageOpts } from '../../lib/drivers/storage-opts';
import { makeTmp, removeTmp } from '../support/tmp';

function fakeDriver(name: string): Driver {
  return { name } as unknown as Driver;
}

describe('newDriver selection (Docker graphdriver.New rules)', () => {
  let root: string;
  const calls: string[] = [];
  const behaviour = new Map<string, 'ok' | 'unsupported' | 'prereq' | 'boom'>();
  beforeAll(() => {
    for (const name of driverPriority) {
      registerDriver(name, async (home) => {
        calls.push(`${name}@${path.basename(home)}`);
        const b = behaviour.get(name) ?? 'unsupported';
        if (b === 'unsupported') throw new NotSupportedError(`${name} missing`);
        if (b === 'prereq') throw new PrerequisitesError(`${name} needs something`);
        if (b === 'boom') throw new Error(`${name} exploded`);
        return fakeDriver(name);
      });
    }
  });
  beforeEach(() => {
    root = makeTmp('gd-reg-');
    calls.length = 0;
    behaviour.clear();
  });
  afterEach(() => removeTmp(root));

  it('has the priority overlay2, btrfs, aufs, devicemapper, vfs', () => {
    expect(driverPriority).toEqual(['overlay2', 'btrfs', 'aufs', 'devicemapper', 'vfs']);
  });

  it('a configured name wins, and its home is <root>/<name>', async () => {
    behaviour.set('vfs', 'ok');
    behaviour.set('overlay2', 'ok');
    const d = await newDriver({ root, name: 'vfs' });
    expect(d.name).toBe('vfs');
    expect(calls).toEqual(['vfs@vfs']);
  });

  it('an unknown configured name is a clear error', async () => {
    await expect(newDriver({ root, name: 'zfs' })).rejects.toMatchObject({ code: 'ERR_DRIVER_UNKNOWN' });
  });

  it('a driver whose home holds state is picked before priority', async () => {
    behaviour.set('overlay2', 'ok');
    behaviour.set('vfs', 'ok');
    fs.mkdirSync(path.join(root, 'vfs', 'dir'), { recursive: true });
    expect((await newDriver({ root })).name).toBe('vfs');
    expect(calls).toEqual(['vfs@vfs']);
  });

  it('two drivers with state is an error naming both', async () => {
    fs.mkdirSync(path.join(root, 'vfs', 'dir'), { recursive: true });
    fs.mkdirSync(path.join(root, 'overlay2', 'l'), { recursive: true });
    await expect(newDriver({ root })).rejects.toThrow(/overlay2, vfs|vfs, overlay2/);
  });

  it('an empty home is not state', async () => {
    fs.mkdirSync(path.join(root, 'btrfs'));
    behaviour.set('vfs', 'ok');
    expect((await newDriver({ root })).name).toBe('vfs');
  });

  it('otherwise the first whose init does not throw NotSupportedError (subclasses included)', async () => {
    behaviour.set('btrfs', 'prereq');
    behaviour.set('devicemapper', 'ok');
    behaviour.set('vfs', 'ok');
    expect((await newDriver({ root })).name).toBe('devicemapper');
    expect(calls).toEqual(['overlay2@overlay2', 'btrfs@btrfs', 'aufs@aufs', 'devicemapper@devicemapper']);
  });

  it('any other init error aborts the search', async () => {
    behaviour.set('btrfs', 'boom');
    behaviour.set('vfs', 'ok');
    await expect(newDriver({ root })).rejects.toThrow('btrfs exploded');
  });

  it('nothing supported is a NotSupportedError listing each reason', async () => {
    const e = await newDriver({ root }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NotSupportedError);
    expect((e as NotSupportedError).code).toBe('ERR_DRIVER_NOT_SUPPORTED');
    expect((e as Error).message).toMatch(/overlay2 missing.*vfs missing/);
  });
});

describe('KeyedLock', () => {
  it('serialises one key and runs different keys concurrently', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a1 = lock.run('a', async () => {
      log.push('a1 start');
      await gate;
      log.push('a1 end');
    });
    const a2 = lock.run('a', async () => {
      log.push('a2');
    });
    const b1 = lock.run('b', async () => {
      log.push('b1');
    });
    await b1;
    expect(log).toEqual(['a1 start', 'b1']);
    release();
    await Promise.all([a1, a2]);
    expect(log).toEqual(['a1 start', 'b1', 'a1 end', 'a2']);
    expect(lock.size).toBe(0);
  });

  it('keeps going after a holder throws', async () => {
    const lock = new KeyedLock();
    await expect(lock.run('k', async () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    await expect(lock.run('k', async () => 5)).resolves.toBe(5);
  });
});

describe('RefCounter', () => {
  it('counts gets and puts, adopting an existing mount once', async () => {
    const rc = new RefCounter();
    const mounted = jest.fn(async () => true);
    expect(await rc.increment('x', mounted)).toBe(2);
    expect(await rc.increment('x', mounted)).toBe(3);
    expect(mounted).toHaveBeenCalledTimes(1);
    expect(await rc.decrement('x', mounted)).toBe(2);
    expect(await rc.decrement('x', mounted)).toBe(1);
    expect(await rc.decrement('x', mounted)).toBe(0);
    await expect(rc.decrement('x', async () => false)).rejects.toBeInstanceOf(NotMountedError);
  });
});

describe('layer ids and storage options', () => {
  it.each(['', '.', '..', 'a/b', '../x', 'a\0b', '-x', '.hidden', 'x'.repeat(129), 'sp ace'])('refuses %j', (id) => {
    expect(() => checkLayerId(id)).toThrow(InvalidIdError);
  });
  it('accepts Docker-style ids and normalises empty parents', () => {
    expect(() => checkLayerId('a'.repeat(64))).not.toThrow();
    expect(() => checkLayerId('abc-init')).not.toThrow();
    expect(checkParentId('')).toBeNull();
    expect(checkParentId(undefined)).toBeNull();
    expect(checkParentId('p1')).toBe('p1');
    expect(() => checkLayerId(42)).toThrow(GraphdriverError);
  });
  it('parses key=value options and names unknown keys', () => {
    expect([...parseStorageOpts('dm', ['dm.basesize=20G', 'DM.FS=xfs'], ['dm.basesize', 'dm.fs'])]).toEqual([
      ['dm.basesize', '20G'],
      ['dm.fs', 'xfs'],
    ]);
    expect(() => parseStorageOpts('dm', ['dm.nope=1'], ['dm.fs'])).toThrow(/unknown storage option "dm.nope"/);
    expect(() => parseStorageOpts('dm', ['novalue'], ['dm.fs'])).toThrow(InvalidOptionError);
  });
  it('parses sizes in binary units and booleans', () => {
    expect(parseSize('10G', 'x')).toBe(10 * 1024 ** 3);
    expect(parseSize('512mib', 'x')).toBe(512 * 1024 ** 2);
    expect(parseSize('1.5k', 'x')).toBe(1536);
    expect(parseSize('100', 'x')).toBe(100);
    expect(() => parseSize('-1G', 'x')).toThrow(InvalidOptionError);
    expect(() => parseSize('10Q', 'x')).toThrow(InvalidOptionError);
    expect(parseBool('true', 'x')).toBe(true);
    expect(parseBool('0', 'x')).toBe(false);
    expect(() => parseBool('maybe', 'x')).toThrow(InvalidOptionError);
  });
});
