import { describe, expect, it } from 'vitest';
import type { BaseManifest, ServerStatus, WalEntry } from '../src/pitr/wal-archive.js';
import { formatLsn, parseLsn, parseSegmentName, segmentName } from '../src/pitr/wal-names.js';
import { planRecovery, recoveryWindow } from '../src/pitr/window.js';

/*
 * The recoverable window and a restore's plan, from what a store lists: which base backup, which WAL,
 * and the refusals (out of range, a gap, another timeline) that come before anything is touched.
 */

const MB16 = 16 * 2 ** 20;
const SERVER = '7400000000000000001';

function base(id: string, start: string, stop: string, completedAt: string, timeline = 1): BaseManifest {
  return {
    kind: 'dbops-base-backup',
    id,
    server: SERVER,
    major: 15,
    timeline,
    startLsn: start,
    stopLsn: stop,
    walSegmentBytes: MB16,
    startedAt: completedAt,
    completedAt,
    durationMs: 1000,
    sizeBytes: 1,
    storage: 'tree',
    envs: { prod: 'app' },
  };
}

function segment(number: number, archivedAt: string, timeline = 1): WalEntry {
  return {
    kind: 'dbops-wal',
    server: SERVER,
    name: segmentName({ timeline, number: BigInt(number) }, MB16),
    partial: false,
    bytes: MB16,
    sha256: '0'.repeat(64),
    archivedAt,
  };
}

const at = (minute: number) => `2026-12-07T10:${String(minute).padStart(2, '0')}:00.000Z`;
// Base A ends in segment 2 (0/2000100), base B in segment 6 (0/6000100).
const bases = [base('base-a', '0/2000028', '0/2000100', at(2)), base('base-b', '0/6000028', '0/6000100', at(6))];
const wal = [2, 3, 4, 5, 6, 7, 8].map((number) => segment(number, at(number + 1)));
const status: ServerStatus = {
  kind: 'dbops-wal-status',
  server: SERVER,
  envs: { prod: 'app' },
  walSegmentBytes: MB16,
  timeline: 1,
  archivedLsn: '0/9000000',
  caughtUpAt: at(9),
  updatedAt: at(9),
};

describe('WAL names and positions', () => {
  it('round-trips segment names and positions as PostgreSQL writes them', () => {
    expect(segmentName({ timeline: 1, number: 0x1ffn }, MB16)).toBe('0000000100000001000000FF');
    expect(parseSegmentName('0000000100000001000000FF', MB16)).toEqual({ timeline: 1, number: 0x1ffn });
    expect(formatLsn(parseLsn('1/A0001C8'))).toBe('1/A0001C8');
    expect(() => parseLsn('12345')).toThrow(/not a WAL position/);
  });
});

describe('the recoverable window', () => {
  it('runs from the oldest base backup to the recovery point when the WAL is unbroken', () => {
    const window = recoveryWindow(SERVER, bases, wal, status, new Date(Date.parse(at(9)) + 5_000));
    expect(window).toMatchObject({ from: at(2), fromLsn: '0/2000100', to: at(9), toLsn: '0/9000000', errors: [] });
    expect(window.rpoSeconds).toBe(5);
    expect(window.segments).toBe(7);
  });

  it('names a missing segment; the window then starts at the first base backup after it', () => {
    const window = recoveryWindow(
      SERVER,
      bases,
      wal.filter((entry) => !entry.name.endsWith('04')),
      status,
    );
    expect(window.errors).toEqual(['missing WAL segment 000000010000000000000004 (0/4000000 to 0/5000000)']);
    expect(window.from).toBe(at(6));
  });

  it('calls WAL of another timeline an error', () => {
    const window = recoveryWindow(SERVER, bases, [...wal, segment(9, at(10), 2)], status);
    expect(window.errors[0]).toMatch(/WAL of timeline 2 beside timeline 1/);
  });

  it('says there is nothing to recover without a base backup', () => {
    expect(recoveryWindow(SERVER, [], wal, status).errors).toEqual([
      'no base backup: nothing can be recovered yet (run backup --physical)',
    ]);
  });
});

describe('the plan of a restore', () => {
  it('takes the newest base backup before the time, and the WAL up to the first segment archived after it', () => {
    const plan = planRecovery(SERVER, bases, wal, status, { time: '2026-12-07T10:04:30Z' });
    expect(plan.base.id).toBe('base-a');
    expect(plan.wal.map((entry) => parseSegmentName(entry.name, MB16).number)).toEqual([2n, 3n, 4n]);
  });

  it('takes the WAL up to the segment that holds a position', () => {
    const plan = planRecovery(SERVER, bases, wal, status, { lsn: '0/7000200' });
    expect(plan.base.id).toBe('base-b');
    expect(plan.wal.map((entry) => parseSegmentName(entry.name, MB16).number)).toEqual([6n, 7n]);
  });

  it('continues with the partial segment for the latest WAL, its furthest copy', () => {
    const partial = (flushLsn: string): WalEntry => ({ ...segment(9, at(9)), partial: true, flushLsn });
    const plan = planRecovery(SERVER, bases, [...wal, partial('0/9000100'), partial('0/9000400')], status, {
      latest: true,
    });
    expect(plan.wal.at(-1)).toMatchObject({ partial: true, flushLsn: '0/9000400' });
  });

  it('refuses a time outside the window, naming the range, and a gap in the way', () => {
    expect(() => planRecovery(SERVER, bases, wal, status, { time: '2026-12-07T09:00:00Z' })).toThrow(
      `2026-12-07T09:00:00Z is outside the archived range: recoverable from ${at(2)} (0/2000100) to ${at(9)} (0/9000000)`,
    );
    expect(() => planRecovery(SERVER, bases, wal, status, { lsn: '0/A000000' })).toThrow(/outside the archived range/);
    const broken = wal.filter((entry) => !entry.name.endsWith('07'));
    expect(() => planRecovery(SERVER, bases, broken, status, { latest: true })).toThrow(
      /gap: missing WAL segment 000000010000000000000007/,
    );
  });

  it('a base backup whose WAL was never archived restores to its own end', () => {
    const alone = [base('base-c', '0/3000028', '0/3000100', at(3))];
    const plan = planRecovery(SERVER, alone, [], undefined, { latest: true });
    expect(plan.base.id).toBe('base-c');
    expect(plan.wal).toEqual([]);
  });
});
