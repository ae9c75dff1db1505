import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrowingSegment } from '../src/pitr/growing-segment.js';

/*
 * The segment being received, compressed round by round: what the archiver stores for the partial
 * segment and then for the complete one must decompress, with gunzip as with Node, to the file's bytes.
 */

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

describe('a growing WAL segment, compressed as it grows', () => {
  let dir: string;
  const segment = Buffer.concat([randomBytes(300_000), Buffer.alloc(400_000, 7), randomBytes(348_576)]); // 1 MiB
  const name = '000000010000000000000003';

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dbops-growing-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('each round adds only the new bytes; the partial and the complete segment decompress to the file', async () => {
    const file = path.join(dir, `${name}.partial`);
    // The receiver's file: what was received so far, zeros after.
    const received = (upTo: number) =>
      writeFile(file, Buffer.concat([segment.subarray(0, upTo), Buffer.alloc(segment.length - upTo)]));
    const growing = new GrowingSegment(name);
    for (const upTo of [1, 65_536, 300_001, 700_000]) {
      await received(upTo);
      await growing.extend(file, upTo);
      const wal = growing.current();
      expect(wal.bytes).toBe(upTo);
      expect(wal.sha256).toBe(sha256(segment.subarray(0, upTo)));
      expect(gunzipSync(wal.compressed).equals(segment.subarray(0, upTo))).toBe(true);
    }
    await received(700_000);
    await growing.extend(file, 700_000); // nothing new: nothing added
    expect(growing.current().bytes).toBe(700_000);

    const complete = path.join(dir, name);
    await writeFile(complete, segment);
    const wal = (await growing.complete(complete, segment.length))!;
    expect(wal).toBeDefined();
    expect(wal.sha256).toBe(sha256(segment));
    const stored = path.join(dir, `${name}.gz`);
    await writeFile(stored, wal.compressed);
    // gunzip, as a person restoring by hand would use it, reads every member.
    expect(execFileSync('gunzip', ['-c', stored]).equals(segment)).toBe(true);
  });

  it('a complete segment whose first bytes differ from what was added is not taken from the cache', async () => {
    const file = path.join(dir, 'other.partial');
    await writeFile(file, segment);
    const growing = new GrowingSegment(name);
    await growing.extend(file, 500_000);
    const changed = Buffer.from(segment);
    changed[1234] = changed[1234]! ^ 0xff;
    const complete = path.join(dir, 'other');
    await writeFile(complete, changed);
    expect(await growing.complete(complete, changed.length)).toBeUndefined();
    // Shorter than what was added: not the same file either.
    expect(await growing.complete(complete, 400_000)).toBeUndefined();
  });
});
