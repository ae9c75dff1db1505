import type { RetentionPolicy } from '../retention-policy.js';
import { lastVerification, type Manifest } from './manifest.js';

export type KeepReason = 'last' | 'daily' | 'weekly' | 'monthly' | 'in use' | 'never checked' | 'failed its check';

export interface RetentionPlan {
  keep: { manifest: Manifest; reasons: KeepReason[] }[];
  prune: { manifest: Manifest; reason: string }[];
}

const day = (date: Date) => date.toISOString().slice(0, 10);
const month = (date: Date) => date.toISOString().slice(0, 7);

/** ISO 8601 week, e.g. 2026-W48 (weeks start on Monday; the week belongs to the year of its Thursday). */
function isoWeek(date: Date): string {
  const thursday = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  thursday.setUTCDate(thursday.getUTCDate() - ((thursday.getUTCDay() + 6) % 7) + 3);
  const january4 = new Date(Date.UTC(thursday.getUTCFullYear(), 0, 4));
  const week =
    1 + Math.round(((thursday.getTime() - january4.getTime()) / 86_400_000 - 3 + ((january4.getUTCDay() + 6) % 7)) / 7);
  return `${thursday.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

/**
 * Decides, for the backups of one environment, which stay and which go. Pure: the caller supplies
 * which backups are in use. A backup whose newest check failed, or that was never checked (made before
 * checks were recorded), counts for nothing; it stays while it is newer than the oldest kept one (or
 * while nothing is kept), since a check can fail for reasons of its own, and goes once it is older.
 */
export function planRetention(
  manifests: Manifest[],
  policy: RetentionPolicy,
  inUse: ReadonlySet<string> = new Set(),
): RetentionPlan {
  const newestFirst = [...manifests].sort((a, b) => b.completedAt.localeCompare(a.completedAt));
  const reasons = new Map<string, KeepReason[]>(newestFirst.map((manifest) => [manifest.id, []]));
  const verified = newestFirst.filter((manifest) => lastVerification(manifest)?.ok === true);

  for (const manifest of verified.slice(0, policy.last)) reasons.get(manifest.id)!.push('last');
  const buckets: ['daily' | 'weekly' | 'monthly', number, (date: Date) => string][] = [
    ['daily', policy.daily, day],
    ['weekly', policy.weekly, isoWeek],
    ['monthly', policy.monthly, month],
  ];
  for (const [reason, count, bucketOf] of buckets) {
    const seen = new Set<string>();
    for (const manifest of verified) {
      if (seen.size >= count) break;
      const bucket = bucketOf(new Date(manifest.completedAt));
      if (seen.has(bucket)) continue;
      seen.add(bucket);
      reasons.get(manifest.id)!.push(reason);
    }
  }

  const keptTimes = newestFirst
    .filter((manifest) => reasons.get(manifest.id)!.length > 0)
    .map((manifest) => manifest.completedAt);
  const oldestKept = keptTimes.at(-1);
  for (const manifest of newestFirst) {
    const check = lastVerification(manifest);
    if (
      check?.ok !== true &&
      (oldestKept === undefined || manifest.completedAt > oldestKept) &&
      reasons.get(manifest.id)!.length === 0
    ) {
      reasons.get(manifest.id)!.push(check ? 'failed its check' : 'never checked');
    }
  }
  for (const id of inUse) reasons.get(id)?.push('in use'); // after: a passing use does not move the line above

  const plan: RetentionPlan = { keep: [], prune: [] };
  for (const manifest of newestFirst) {
    const why = reasons.get(manifest.id)!;
    if (why.length > 0) plan.keep.push({ manifest, reasons: why });
    else
      plan.prune.push({
        manifest,
        reason:
          lastVerification(manifest)?.ok === false
            ? `failed its check (${lastVerification(manifest)!.reason ?? 'damaged'}) and older than every kept backup`
            : 'outside the policy',
      });
  }
  return plan;
}
