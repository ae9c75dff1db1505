import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeOwnManifest } from './helpers/manifests.js';
import { Rig } from './helpers/rig.js';

/** Found by the chaos soak: `backups list --json` of many backups, read through a pipe, was cut short. */
describe('CLI output into a pipe', () => {
  let rig: Rig;
  const COUNT = 600;

  beforeAll(async () => {
    rig = await Rig.create();
    for (let i = 0; i < COUNT; i += 1) {
      const id = `app-20260101t${String(100000 + i).padStart(6, '0')}z-${i.toString(16).padStart(6, '0')}`;
      await writeOwnManifest(rig.backupDir, {
        manifestVersion: 1,
        id,
        env: 'app',
        database: 'app',
        format: 'custom',
        archive: `${id}.dump`,
        sizeBytes: 1,
        sha256: '0'.repeat(64),
        tableCount: 1,
        startedAt: '2026-01-01T00:00:00.000Z',
        completedAt: `2026-01-01T00:00:${String(i % 60).padStart(2, '0')}.${String(i).padStart(3, '0')}Z`,
        durationMs: 1,
        pgDumpVersion: 'pg_dump (PostgreSQL) 15.0',
        serverVersion: '15.0',
        jobId: `backup-${i}`,
        rowCounts: Object.fromEntries(
          Array.from({ length: 20 }, (_, table) => [`public.table_number_${table}`, table]),
        ),
      } as { id: string });
    }
  });
  afterAll(async () => rig?.cleanup());

  it('is written whole before the CLI exits: backups list --json of 600 backups parses', async () => {
    const listed = await rig.cli(['backups', 'list', '--json']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    expect(listed.stdout.length).toBeGreaterThan(400_000);
    expect((JSON.parse(listed.stdout) as unknown[]).length).toBe(COUNT);
  });
});
