import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { workerTypes } from '../src/operations/index.js';

const compose = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
const composeMissing = compose.error ? "Debian's docker-compose is not installed (.ci/run installs it)" : undefined;

describe('deployment files', () => {
  describe.skipIf(composeMissing !== undefined)(
    `docker-compose.yml${composeMissing ? ` (skipped: ${composeMissing})` : ''}`,
    () => {
      const run = (env: Record<string, string>, ...args: string[]) =>
        execa('docker-compose', ['-f', 'docker-compose.yml', 'config', ...args], {
          env: { PATH: process.env.PATH!, ...env },
          extendEnv: false,
          reject: false,
        });

      it('validates, with Redis, PostgreSQL, the dashboard and one service per worker type', async () => {
        const services = await run({ DASHBOARD_PASSWORD: 'secret' }, '--services');
        expect(services.exitCode).toBe(0);
        expect(services.stdout.split('\n').sort()).toEqual(
          [
            'dashboard',
            'minio',
            'minio-bucket',
            'postgres',
            'redis',
            ...workerTypes.map((type) => `worker-${type}`),
            // The WAL archiver, started only with the pitr profile.
            'worker-wal',
          ].sort(),
        );
        const full = await run({ DASHBOARD_PASSWORD: 'secret' });
        expect(full.exitCode).toBe(0);
        expect(full.stdout).toContain('noeviction');
        expect(full.stdout).toMatch(/--appendonly\s*\n?\s*- ['"]?yes/);
        for (const type of workerTypes) expect(full.stdout).toContain(`- ${type}`);
        expect(full.stdout).toMatch(/worker-wal:[\s\S]*?- wal[\s\S]*?profiles:\s*\n\s*- pitr/);
        expect(full.stdout).toMatch(/backups:\/backups/);
        expect(full.stdout).toMatch(/image: minio\/minio/);
        expect(readFileSync('docker-compose.yml', 'utf8')).toMatch(
          /# BACKUP_STORES: file:\/\/\/backups,s3:\/\/dbops-backups\/prod\?forcePathStyle=true/,
        );
      });

      it('refuses to run the dashboard without a password', async () => {
        const result = await run({});
        expect(result.exitCode).not.toBe(0);
        expect(result.stderr).toContain('set DASHBOARD_PASSWORD in .env');
      });
    },
  );
});
