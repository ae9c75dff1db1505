import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, scratchDatabasesOf, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { REDIS_URL } from './helpers/services.js';

/*
 * Issue 24: the team's own migrations through dbops: a Flask app with Flask-Migrate (a data migration,
 * a branch and its merge) and a plain Alembic project, run with Debian's python3-flask-migrate,
 * python3-alembic, python3-flask-sqlalchemy and python3-psycopg2.
 */

const FIXTURES = path.resolve(import.meta.dirname, 'fixtures');
const PYTHON = '/usr/bin/python3';
const hasAlembic = spawnSync(PYTHON, ['-c', 'import alembic, flask_migrate, flask_sqlalchemy, psycopg2']).status === 0;

const BAD_REVISION = `"""halfway it raises

Revision ID: f1
Revises: e1
"""
import sqlalchemy as sa
from alembic import op

revision = "f1"
down_revision = "e1"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer))
    op.execute("INSERT INTO half_done VALUES (1)")
    raise RuntimeError("the data does not fit")


def downgrade():
    op.drop_table("half_done")
`;

describe.skipIf(!hasAlembic)(
  `Alembic and Flask-Migrate migrations${hasAlembic ? '' : ' (skipped: Debian python3-alembic and friends are not installed)'}`,
  () => {
    let rig: Rig;
    let root: string;
    const PASSWORD = 'migrate-secret-pw-0123';

    beforeAll(async () => {
      root = mkdtempSync(path.join(os.tmpdir(), 'dbops-alembic-'));
      cpSync(path.join(FIXTURES, 'flask-app'), path.join(root, 'app'), { recursive: true });
      cpSync(path.join(FIXTURES, 'alembic-plain'), path.join(root, 'plain'), { recursive: true });
      mkdirSync(path.join(root, 'empty'));
      rig = await Rig.create({ MIGRATIONS_ROOT: root, MIGRATE_PYTHON: PYTHON, FLASK_APP: 'app:create_app' });
      for (const name of ['flask', 'plain', 'twice']) {
        await createDatabase(rig.db(name));
        rig.setEnv(name, rig.db(name), PASSWORD); // trust ignores it; it shows whether the URL leaks anywhere
      }
      await rig.startWorker('migrate');
      await rig.startWorker('migrate');
      await rig.startWorker('backup');
    });
    afterAll(async () => {
      await rig?.cleanup();
      if (root) rmSync(root, { recursive: true, force: true });
    });

    const migrate = (env: string, dir: string, ...args: string[]) =>
      rig.cli(['migrate', ...args, '--env', env, '--dir', path.join(root, dir), '--wait', '--json']);
    const versions = async (env: string) =>
      (await sql<{ version_num: string }>(rig.db(env), 'SELECT version_num FROM alembic_version ORDER BY 1')).map(
        (row) => row.version_num,
      );

    it('Flask-Migrate: status (a branch and its merge, in order), up --to, --dry-run touches nothing, up, down 1', async () => {
      const status = await migrate('flask', 'app/migrations', 'status');
      expect(status.exitCode, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout)).toEqual({
        action: 'status',
        kind: 'flask',
        current: [],
        heads: ['e1'],
        pending: ['a1', 'c1', 'b1', 'd1', 'e1'],
      });

      const partly = await migrate('flask', 'app/migrations', 'up', '--to', 'b1');
      expect(partly.exitCode, partly.stderr).toBe(0);
      expect(JSON.parse(partly.stdout)).toMatchObject({
        action: 'up',
        kind: 'flask',
        dryRun: false,
        migrations: ['a1', 'b1'],
      });
      expect(await versions('flask')).toEqual(['b1']);

      const dry = await migrate('flask', 'app/migrations', 'up', '--dry-run');
      expect(dry.exitCode, dry.stderr).toBe(0);
      const planned = JSON.parse(dry.stdout) as { migrations: string[]; sql: string };
      expect(planned.migrations).toEqual(['c1', 'd1', 'e1']);
      expect(planned.sql).toContain('CREATE TABLE posts');
      expect(planned.sql).toContain("UPDATE users SET email = name || '@example.invalid'");
      expect(await versions('flask')).toEqual(['b1']); // nothing touched, not even alembic_version
      expect(await sql(rig.db('flask'), "SELECT to_regclass('posts') AS posts")).toEqual([{ posts: null }]);

      const up = await migrate('flask', 'app/migrations', 'up');
      expect(up.exitCode, up.stderr).toBe(0);
      expect(JSON.parse(up.stdout)).toMatchObject({ migrations: ['c1', 'd1', 'e1'] });
      expect(await versions('flask')).toEqual(['e1']);
      expect(await sql(rig.db('flask'), 'SELECT email FROM users ORDER BY id')).toEqual([
        { email: 'ada@example.invalid' },
        { email: 'grace@example.invalid' },
      ]);

      const down = await migrate('flask', 'app/migrations', 'down', '1');
      expect(down.exitCode, down.stderr).toBe(0);
      expect(JSON.parse(down.stdout)).toMatchObject({ action: 'down', migrations: ['e1'] });
      expect(await versions('flask')).toEqual(['d1']);
      const plain = await rig.cli([
        'migrate',
        'status',
        '--env',
        'flask',
        '--dir',
        path.join(root, 'app/migrations'),
        '--wait',
      ]);
      expect(plain.stdout).toContain('flask: at d1; head e1');
    });

    it('--backup-first records the old revision in the backup; a failing revision fails the rehearsal and leaves the database alone; then fails for real, rolled back', async () => {
      const first = await migrate('flask', 'app/migrations', 'up', '--backup-first');
      expect(first.exitCode, first.stderr).toBe(0);
      const { backupId } = JSON.parse(first.stdout) as { backupId: string };
      const listed = await rig.cli(['backups', 'list', '--env', 'flask', '--json']);
      expect(
        (JSON.parse(listed.stdout) as { id: string; schemaVersion: unknown }[]).find((backup) => backup.id === backupId)
          ?.schemaVersion,
      ).toEqual({
        tool: 'alembic',
        revisions: ['d1'],
      });
      expect(await versions('flask')).toEqual(['e1']);

      writeFileSync(path.join(root, 'app/migrations/versions/f1_bad.py'), BAD_REVISION);
      try {
        expect((await rig.cli(['backup', '--env', 'flask', '--wait'])).exitCode).toBe(0);
        const rehearsed = await migrate('flask', 'app/migrations', 'up', '--rehearse');
        expect(rehearsed.exitCode).toBe(1);
        expect(rehearsed.stderr).toMatch(
          /rehearsal on flask-.* failed: revision f1 failed: RuntimeError: the data does not fit/,
        );
        expect(await versions('flask')).toEqual(['e1']);
        expect(await scratchDatabasesOf(rig.db('flask'))).toEqual([]);

        const real = await migrate('flask', 'app/migrations', 'up');
        expect(real.exitCode).toBe(1);
        expect(real.stderr).toContain(
          'revision f1 failed: RuntimeError: the data does not fit; it was rolled back, the database is at the revision before it',
        );
        expect(await versions('flask')).toEqual(['e1']);
        expect(await sql(rig.db('flask'), "SELECT to_regclass('half_done') AS t")).toEqual([{ t: null }]); // nothing half-applied
      } finally {
        rmSync(path.join(root, 'app/migrations/versions/f1_bad.py'));
      }
    });

    it('a plain Alembic project: status, up --to, up, down 1, --dry-run', async () => {
      const status = await migrate('plain', 'plain', 'status');
      expect(JSON.parse(status.stdout)).toEqual({
        action: 'status',
        kind: 'alembic',
        current: [],
        heads: ['3c'],
        pending: ['1a', '2b', '3c'],
      });
      expect(JSON.parse((await migrate('plain', 'plain', 'up', '--to', '2b')).stdout)).toMatchObject({
        migrations: ['1a', '2b'],
      });
      const dry = JSON.parse((await migrate('plain', 'plain', 'up', '--dry-run')).stdout) as {
        migrations: string[];
        sql: string;
      };
      expect(dry.migrations).toEqual(['3c']);
      expect(dry.sql).toContain("INSERT INTO items (name, price_cents) VALUES ('tea', 250)");
      expect(await versions('plain')).toEqual(['2b']);
      expect(JSON.parse((await migrate('plain', 'plain', 'up')).stdout)).toMatchObject({ migrations: ['3c'] });
      expect(await sql(rig.db('plain'), 'SELECT name FROM items ORDER BY id')).toEqual([
        { name: 'tea' },
        { name: 'cake' },
      ]);
      expect(JSON.parse((await migrate('plain', 'plain', 'down', '1')).stdout)).toMatchObject({ migrations: ['3c'] });
      expect(await versions('plain')).toEqual(['2b']);
    });

    it('two migrate jobs at once on two workers apply each revision once; both end well; no URL in argv, logs or job data', async () => {
      // A revision slow enough to be seen running.
      writeFileSync(
        path.join(root, 'plain/alembic/versions/4d_slow.py'),
        '"""slow\n\nRevision ID: 4d\nRevises: 3c\n"""\nfrom alembic import op\n\nrevision = "4d"\ndown_revision = "3c"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    op.execute("SELECT pg_sleep(1.5)")\n\n\ndef downgrade():\n    pass\n',
      );
      try {
        const producer = rig.producer();
        const jobs = await Promise.all(
          [0, 1].map(() => producer.enqueue('migrate', { env: 'twice', dir: path.join(root, 'plain') })),
        );
        const seen: string[] = [];
        let done = false;
        const watching = (async () => {
          while (!done) {
            seen.push((await execa('ps', ['-eo', 'args'])).stdout);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        })();
        const outcomes = await Promise.all(jobs.map((job) => producer.wait(job.id)));
        done = true;
        await watching;
        expect(outcomes.map((outcome) => outcome.state)).toEqual(['completed', 'completed']);
        const applied = outcomes.map(
          (outcome) => (outcome as { result?: { migrations: string[] } }).result!.migrations,
        );
        expect(applied.flat().sort()).toEqual(['1a', '2b', '3c', '4d']); // each once, by whichever job came first
        expect(await versions('twice')).toEqual(['4d']);
        expect(await sql(rig.db('twice'), 'SELECT count(*)::int AS n FROM items')).toEqual([{ n: 2 }]);
        expect(seen.join('\n')).toContain('alembic_runner.py'); // the runner was seen running…
        expect(seen.join('\n')).not.toContain(PASSWORD); // …without the URL on its command line
        const redis = new Redis(REDIS_URL);
        try {
          for (const job of jobs) {
            const stored = JSON.stringify(await redis.hgetall(`${rig.prefix}:migrate:${job.id}`));
            const logs = JSON.stringify(await redis.lrange(`${rig.prefix}:migrate:${job.id}:logs`, 0, -1));
            expect(stored).not.toContain(PASSWORD);
            expect(logs).not.toContain(PASSWORD);
            expect(stored).not.toContain('postgresql://');
          }
        } finally {
          redis.disconnect();
        }
      } finally {
        rmSync(path.join(root, 'plain/alembic/versions/4d_slow.py'));
      }
    });

    it('a folder with no migrations of a known kind fails at once, saying what was looked for; a folder outside MIGRATIONS_ROOT is refused', async () => {
      const empty = await migrate('plain', 'empty', 'up');
      expect(empty.exitCode).toBe(2);
      expect(empty.stderr.trim()).toMatch(
        /^manage-db: .*no migrations of a known kind in empty: looked for alembic\.ini \(Alembic\), env\.py with Flask's current_app \(Flask-Migrate\) and <number>_<name>\.sql files \(node-pg-migrate\)$/,
      );
      const outside = await rig.cli(['migrate', 'up', '--env', 'plain', '--dir', os.tmpdir(), '--wait']);
      expect(outside.exitCode).toBe(2);
      expect(outside.stderr).toContain('is not inside MIGRATIONS_ROOT');
    });

    it('restore --latest --at-revision takes the newest backup at that schema revision', async () => {
      const backups = JSON.parse((await rig.cli(['backups', 'list', '--env', 'flask', '--json'])).stdout) as {
        id: string;
        schemaVersion: { revisions: string[] };
      }[];
      const atD1 = backups.filter((backup) => backup.schemaVersion.revisions.includes('d1')).at(-1)!;
      await createDatabase(rig.db('restored'));
      rig.setEnv('restored', rig.db('restored'));
      const restored = await rig.cli([
        'restore',
        '--env',
        'restored',
        '--latest',
        '--from',
        'flask',
        '--at-revision',
        'd1',
        '--local',
        '--json',
      ]);
      expect(restored.exitCode, restored.stderr).toBe(0);
      expect(JSON.parse(restored.stdout)).toMatchObject({
        backupId: atD1.id,
        schemaVersion: { tool: 'alembic', revisions: ['d1'] },
      });
      expect(await versions('restored')).toEqual(['d1']);
      const none = await rig.cli([
        'restore',
        '--env',
        'restored',
        '--latest',
        '--from',
        'flask',
        '--at-revision',
        'zz',
        '--local',
      ]);
      expect(none.exitCode).toBe(2);
      expect(none.stderr).toContain('no verified backup of flask at schema revision zz');
      // Into the database it came from, now at e1: the result says the schema went back.
      expect(await versions('flask')).toEqual(['e1']);
      const back = await rig.cli(['restore', '--env', 'flask', '--backup', atD1.id, '--local', '--json']);
      expect(back.exitCode, back.stderr).toBe(0);
      expect(JSON.parse(back.stdout).schemaNote).toBe(
        "the restored backup's schema is at d1; the database it replaced was at e1: run migrate up if the code expects e1",
      );
    });
  },
);
