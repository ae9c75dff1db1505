import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecryptStream, EncryptStream, keyId } from '../src/backups/encryption.js';
import { deriveSigningKey } from '../src/secrets.js';
import { fingerprint, scratchDatabasesOf, shadowDatabasesFor, type Fingerprint } from './helpers/pg.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';

const CHUNK = 1 << 20;

/** Feeds `data` in uneven pieces, as a pipe would. */
function piecewise(data: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0, size = 1; at < data.length; at += size, size = (size * 7 + 13) % 200_000 || 1)
    pieces.push(data.subarray(at, at + size));
  return Readable.from(pieces);
}

const encrypt = (data: Buffer, key: Buffer) => buffer(piecewise(data).pipe(new EncryptStream(key)));
const decrypt = (data: Buffer, key: Buffer) => buffer(piecewise(data).pipe(new DecryptStream(key)));

describe('archive encryption (AES-256-GCM, chunked)', () => {
  const key = randomBytes(32);

  it('round-trips any length, across chunk boundaries', async () => {
    for (const length of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]) {
      const plain = randomBytes(length);
      const sealed = await encrypt(plain, key);
      expect(sealed.length, `length ${length}`).toBe(15 + length + 16 * Math.max(1, Math.ceil(length / CHUNK)));
      expect((await decrypt(sealed, key)).equals(plain), `length ${length}`).toBe(true);
    }
  });

  it('refuses the wrong key, a flipped bit, a cut tail and a dropped last chunk', async () => {
    const plain = randomBytes(2 * CHUNK + 100);
    const sealed = await encrypt(plain, key);
    await expect(decrypt(sealed, randomBytes(32))).rejects.toThrow(
      /wrong BACKUP_ENCRYPTION_KEY, or the archive is damaged/,
    );
    const flipped = Buffer.from(sealed);
    flipped[CHUNK + 500] = flipped[CHUNK + 500]! ^ 1;
    await expect(decrypt(flipped, key)).rejects.toThrow(/block 1 does not authenticate/); // the second chunk
    await expect(decrypt(sealed.subarray(0, sealed.length - 10), key)).rejects.toThrow(/cannot decrypt/);
    await expect(decrypt(sealed.subarray(0, 15 + 2 * (CHUNK + 16)), key)).rejects.toThrow(/cannot decrypt/);
    await expect(decrypt(Buffer.from('PGDMP plain archive'), key)).rejects.toThrow(/not encrypted by dbops/);
  });
});

describe('encrypted backups', () => {
  const key = randomBytes(32).toString('hex');
  let rig: Rig;
  let target: Fingerprint;
  let backup: { backupId: string; path: string };

  beforeAll(async () => {
    rig = await Rig.create({ BACKUP_ENCRYPTION_KEY: key });
    target = await sourceAndTarget(rig);
    await rig.startWorker('backup');
    const run = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    backup = JSON.parse(run.stdout);
  });
  afterAll(async () => rig?.cleanup());

  it('are written encrypted, the manifest naming the key by id only', () => {
    const archive = readFileSync(backup.path);
    expect(archive.subarray(0, 8).toString()).toBe('DBOPSAE1');
    expect(archive.includes(Buffer.from('PGDMP'))).toBe(false);
    const manifestText = readFileSync(backup.path.replace(/\.dump$/, '.json'), 'utf8');
    expect(JSON.parse(manifestText).encryption).toEqual({
      algorithm: 'aes-256-gcm-chunked',
      keyId: keyId(Buffer.from(key, 'hex')),
    });
    expect(manifestText).not.toContain(key);
  });

  it('with the wrong key, restore fails with a clear error before the target is touched', async () => {
    const wrong = randomBytes(32).toString('hex');
    const worker = await rig.startWorker('restore', { BACKUP_ENCRYPTION_KEY: wrong });
    const run = await rig.cli(['restore', '--env', 'target', '--backup', backup.backupId, '--wait']);
    expect(run.exitCode).toBe(1);
    // Its manifest is signed with a key derived from the encryption key: another key cannot even read it as dbops' own.
    expect(run.stderr).toContain(
      `backup "${backup.backupId}" in the file store is not dbops' own: signed with key ${keyId(deriveSigningKey(Buffer.from(key, 'hex')))}`,
    );
    expect(run.stderr).toContain('made with another BACKUP_ENCRYPTION_KEY? earlier keys go in BACKUP_DECRYPTION_KEYS');
    expect(await fingerprint(rig.db('target'))).toEqual(target);
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    worker.process.kill('SIGTERM');
    await worker.exited;
  });

  it('with the right key, verify --full and restore decrypt on the fly: what comes back equals the source', async () => {
    const verify = await rig.cli(['backups', 'verify', backup.backupId, '--full', '--local', '--json']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, level: 'full' });
    expect(await scratchDatabasesOf(rig.db('source'))).toEqual([]);

    await rig.startWorker('restore');
    const run = await rig.cli(['restore', '--env', 'target', '--backup', backup.backupId, '--wait']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
  });

  it('after a key rotation, the earlier key in BACKUP_DECRYPTION_KEYS still opens the backups made with it', async () => {
    const rotated = { BACKUP_ENCRYPTION_KEY: randomBytes(32).toString('hex'), BACKUP_DECRYPTION_KEYS: key };
    const verify = await rig.cli(['backups', 'verify', backup.backupId, '--full', '--local'], rotated);
    expect(verify.exitCode, verify.stderr).toBe(0);
    const without = await rig.cli(['backups', 'verify', backup.backupId, '--full', '--local'], {
      BACKUP_ENCRYPTION_KEY: rotated.BACKUP_ENCRYPTION_KEY,
    });
    expect(without.exitCode).toBe(1);
    expect(without.stderr).toContain('earlier keys go in BACKUP_DECRYPTION_KEYS');
  });

  it('refuses a directory-format backup, which it cannot encrypt, before enqueueing', async () => {
    const run = await rig.cli(['backup', '--env', 'source', '--format', 'directory']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain('encrypted backups (BACKUP_ENCRYPTION_KEY) are custom format only');
  });
});
