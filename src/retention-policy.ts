/**
 * Grandfather-father-son retention. `last`: the newest N verified backups, whatever their age (the
 * floor: a policy never leaves fewer while backups keep failing). `daily`/`weekly`/`monthly`: the
 * newest verified backup of each of the N newest days / ISO weeks / months (UTC) that have one.
 */
export interface RetentionPolicy {
  last: number;
  daily: number;
  weekly: number;
  monthly: number;
}

const KEYS = ['last', 'daily', 'weekly', 'monthly'] as const;

/** `last=7,daily=7,weekly=4,monthly=12` (any of them; `last` at least 1, 1 when not given). */
export function parseRetention(text: string): RetentionPolicy {
  const policy: RetentionPolicy = { last: 1, daily: 0, weekly: 0, monthly: 0 };
  for (const part of text
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean)) {
    const match = /^(last|daily|weekly|monthly)=(\d{1,5})$/.exec(part);
    if (!match) throw new Error(`"${part}" is not one of last=N, daily=N, weekly=N, monthly=N`);
    policy[match[1] as (typeof KEYS)[number]] = Number(match[2]);
  }
  if (policy.last < 1) throw new Error('last must be at least 1: a policy never deletes the newest backup');
  return policy;
}

export function describeRetention(policy: RetentionPolicy): string {
  return KEYS.map((key) => `${key}=${policy[key]}`).join(',');
}
