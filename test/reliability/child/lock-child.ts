/**
 * The lock child (issue 11 item 4): several of these work on one store root at the same time.
 *
 *   node lock-child.js <root> <driver> <name> <rounds> <images> <lockTimeoutMs> <holdMs>
 *
 * Each round opens the store (waiting up to lockTimeoutMs for the other processes), imports `images` small images
 * tagged `<name>/r<round>:<i>`, holds the store `holdMs` more, and closes it. Prints one JSON line per round:
 * `{ round, waitedMs, opened, code? }`. With lockTimeoutMs 0 a locked store ends the round with its error code.
 * @module
 */
import * as fs from 'node:fs';
import { Readable } from 'node:stream';

import { END_OF_ARCHIVE, encodeHeader, paddingFor } from '../../../lib/archive/tar-writer';
import { Storage } from '../../../lib/storage/storage';

function tar(tag: string): Buffer {
  const data = Buffer.from(`content of ${tag}\n`);
  return Buffer.concat([
    encodeHeader({ name: `${tag}.txt`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeSec: 1700000000, size: data.length }),
    data,
    Buffer.alloc(paddingFor(data.length)),
    END_OF_ARCHIVE,
  ]);
}

async function main(): Promise<void> {
  const [root, driver, name, rounds, images, lockTimeout, holdMs] = process.argv.slice(2);
  if (!root || !driver || !name) throw new Error('usage: lock-child <root> <driver> <name> <rounds> <images> <lockTimeoutMs> <holdMs>');
  for (let r = 0; r < Number(rounds); r++) {
    const t0 = Date.now();
    let s: Storage;
    try {
      s = await Storage.open({ root, driver, lockTimeout: Number(lockTimeout) });
    } catch (e) {
      fs.writeSync(1, `${JSON.stringify({ round: r, opened: false, waitedMs: Date.now() - t0, code: (e as { code?: unknown }).code })}\n`);
      continue;
    }
    const waitedMs = Date.now() - t0;
    try {
      for (let i = 0; i < Number(images); i++) {
        await s.importImage(Readable.from([tar(`${name}-${r}-${i}`)]), { reference: `${name}/r${r}:${i}` });
      }
      await new Promise((res) => setTimeout(res, Number(holdMs)));
    } finally {
      await s.close();
    }
    fs.writeSync(1, `${JSON.stringify({ round: r, opened: true, waitedMs })}\n`);
  }
}

main().catch((e: unknown) => {
  fs.writeSync(2, `lock child failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
