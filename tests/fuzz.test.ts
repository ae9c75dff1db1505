import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.js';
import { ValidationError } from '../src/errors.js';
import { operationTypes } from '../src/operations/index.js';
import { validatePayload } from '../src/operations/validate.js';
import { fingerprint, loadPagila, type Fingerprint } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

/** A small seeded generator: a failing case can be replayed from its seed. */
function generator(seed: number) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  return { next, pick };
}

const HOSTILE: unknown[] = [
  '',
  ' ',
  'x'.repeat(20_000),
  '../../etc/passwd',
  '/etc/shadow',
  '..',
  "'; DROP TABLE actor; --",
  'film"; drop table actor; --',
  "robert'); DELETE FROM film; --",
  '\u0000',
  'nul\u0000byte',
  '☃💥\u202Eevil',
  'ǅǈ\uFFFF',
  'postgres://u:p@h/db',
  '$(rm -rf /)',
  '`id`',
  '%s%n%x',
  -1,
  0,
  1.5,
  -2147483649,
  1e308,
  Number.MAX_SAFE_INTEGER,
  true,
  null,
  [],
  ['a', 1],
  {},
  { $where: '1' },
];

const FIELDS = [
  'env',
  'from',
  'to',
  'backup',
  'confirm',
  'format',
  'jobs',
  'compress',
  'action',
  'table',
  'name',
  'sql',
  'forSeconds',
  'triggers',
  'dir',
  'count',
  'target',
  'dryRun',
  'backupFirst',
  'rehearse',
  'sanitize',
  'verify',
  'keepPrevious',
  'lockTimeoutMs',
  'analyze',
  'full',
  'latest',
  'policy',
  '__proto__',
  'constructor',
  'url',
];

describe('fuzzing every payload schema and the CLI with hostile values', () => {
  let rig: Rig;
  let config: Config;
  let before: Fingerprint;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'app' });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    rig.setEnv('other', rig.db('other'));
    config = loadConfig(rig.env);
    before = await fingerprint(rig.db('app'));
  });
  afterAll(async () => rig?.cleanup());

  it('validation answers every payload with a result or a ValidationError, never anything else', async () => {
    const { next, pick } = generator(20261125);
    let refused = 0;
    for (let round = 0; round < 3000; round += 1) {
      const type = pick(operationTypes);
      const payload: Record<string, unknown> = next() < 0.7 ? { env: pick(['app', 'other', 'APP', 'nowhere']) } : {};
      const fields = 1 + Math.floor(next() * 4);
      for (let i = 0; i < fields; i += 1) payload[pick(FIELDS)] = pick(HOSTILE);
      try {
        await validatePayload(config, type, next() < 0.05 ? pick(HOSTILE) : payload);
      } catch (error) {
        if (!(error instanceof ValidationError))
          throw new Error(`round ${round}: ${type} ${JSON.stringify(payload).slice(0, 300)} threw ${String(error)}`, {
            cause: error,
          });
        expect(error.message).not.toContain('\n    at ');
        refused += 1;
      }
    }
    expect(refused).toBeGreaterThan(2500); // hostile input is refused, not waved through
  });

  it('the CLI answers hostile arguments with exit 0, 1 or 2, one line at most on stderr, no stack trace, nothing changed', async () => {
    const { pick } = generator(7);
    const commands = [
      ['backup', '--env'],
      ['restore', '--env', 'other', '--backup'],
      ['copy', '--from', 'app', '--to'],
      ['migrate', '--env', 'app', '--dir'],
      ['triggers', 'disable', '--env', 'app', '--table'],
      ['maintenance', 'vacuum', '--env', 'app', '--table'],
      ['jobs', 'show'],
      ['jobs', 'cancel'],
      ['backups', 'verify'],
      ['backups', 'verify', '--full', '--latest'],
      ['backups', 'prune', '--dry-run', '--policy'],
      ['schedule', 'add', 'fuzz', '--cron'],
      ['schedule', 'add', 'fuzz', '--cron', '* * * * *', 'backup', '--env'],
      ['schedule', 'remove'],
      ['enqueue', 'backup'],
    ];
    const values = HOSTILE.filter(
      (value): value is string | number =>
        (typeof value === 'string' || typeof value === 'number') && !String(value).includes('\u0000'),
    );
    for (let round = 0; round < 24; round += 1) {
      const args = [...pick(commands), String(pick(values))];
      const run = await rig.cli(args);
      expect([0, 1, 2], `${args.join(' ')}: ${run.stderr}`).toContain(run.exitCode);
      expect(run.stderr.trim().split('\n').length, `${args.join(' ')}: ${run.stderr}`).toBeLessThanOrEqual(1);
      expect(run.stderr).not.toMatch(/\n\s+at |node:internal/);
    }
    expect(await fingerprint(rig.db('app'))).toEqual(before);
  });
});
