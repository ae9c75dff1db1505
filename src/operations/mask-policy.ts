import * as z from 'zod';
import type { ColumnFact } from '../postgres/catalog.js';
import { MASK_RULES, type MaskRule, type MaskRuleName } from '../postgres/masking.js';

/*
 * A masking policy: per table and column, what a copy does to the values before the copy becomes
 * visible. Strict: every column of every copied table must be named (or covered by the table's "*", or
 * by `other_tables: keep`), every name must exist, every rule must suit its column; anything else fails
 * the copy before it starts, naming each column. A column added to the source after the policy was
 * written is a failure, never a leak.
 */

/** A table's key that is no column: rows matching this SQL condition are deleted from the copy. */
export const DELETE_WHERE = '_delete_where';

const ruleSchema = z.union([
  z.enum(MASK_RULES),
  z.strictObject({ value: z.union([z.string(), z.number(), z.boolean(), z.null()]) }),
]);

const tableSchema = z
  .record(z.string().min(1).max(63), z.union([ruleSchema, z.string().min(1).max(10_000)]))
  .superRefine((columns, context) => {
    for (const [column, rule] of Object.entries(columns)) {
      if (
        column === DELETE_WHERE
          ? typeof rule !== 'string'
          : typeof rule === 'string' && !(MASK_RULES as readonly string[]).includes(rule)
      )
        context.addIssue({
          code: 'custom',
          path: [column],
          message:
            column === DELETE_WHERE
              ? 'expected an SQL condition'
              : `unknown rule "${String(rule)}" (one of ${MASK_RULES.join(', ')}, or {value: …})`,
        });
    }
  });

export const maskPolicySchema = z
  .strictObject({
    /** Mixed into every fake and hash: the same value masks to the same result under the same seed. */
    seed: z.string().min(1).max(200).optional(),
    tables: z.record(
      z.string().regex(/^[^.\s]+\.[^.\s]+$/, { message: 'expected a table as schema.table' }),
      tableSchema,
    ),
    other_tables: z.literal('keep').optional(),
  })
  .meta({
    description:
      'a masking policy (docs/masking.md): tables: {"schema.table": {column: rule}}, other_tables: keep; every column of every copied table covered, or the copy fails naming them',
  });
export type MaskPolicy = z.output<typeof maskPolicySchema>;

/** The rule a column gets: its own, its table's "*", keep for a table other_tables covers; undefined when none. */
export function ruleFor(policy: MaskPolicy, column: Pick<ColumnFact, 'table' | 'column'>): MaskRule | undefined {
  const table = policy.tables[column.table];
  if (!table) return policy.other_tables === 'keep' ? 'keep' : undefined;
  const rule = table[column.column] ?? table['*'];
  return rule as MaskRule | undefined;
}

/** The columns a policy does not cover (all of them without a policy), in catalog order. */
export function uncoveredColumns(policy: MaskPolicy | undefined, columns: ColumnFact[]): ColumnFact[] {
  return columns.filter((column) => !policy || ruleFor(policy, column) === undefined);
}

/** Shortest value each fake makes, for a varchar(n) too short to hold it. */
const FAKE_LENGTH: Partial<Record<MaskRuleName, number>> = { fake_email: 37, fake_phone: 17, hash: 16 };

function ruleProblem(rule: MaskRule, column: ColumnFact): string | undefined {
  if (typeof rule === 'object') return column.generated ? 'a generated column can only be kept' : undefined;
  if (rule === 'keep') return undefined;
  if (column.generated) return 'a generated column can only be kept (mask the columns it is made from)';
  if (rule === 'null') return column.nullable ? undefined : 'null on a NOT NULL column';
  if (rule === 'truncate_month') {
    if (column.category !== 'D') return `truncate_month needs a date or timestamp column (it is ${column.type})`;
    return column.unique ? 'truncate_month on a unique column would make duplicates' : undefined;
  }
  if (rule === 'shuffle') return column.unique ? 'shuffle on a unique column (a swap would collide midway)' : undefined;
  if (column.category !== 'S') return `${rule} needs a text column (it is ${column.type})`;
  const shortest = FAKE_LENGTH[rule];
  if (shortest && column.maxLength !== null && column.maxLength < shortest)
    return `${rule} makes ${shortest} characters; ${column.type} holds ${column.maxLength}`;
  if (rule === 'fake_name' && column.unique && column.maxLength !== null && column.maxLength < 24)
    return `fake_name on a unique column makes up to 24 characters; ${column.type} holds ${column.maxLength}`;
  return undefined;
}

const MAX_LISTED = 40;

/**
 * Everything wrong with a policy for these columns, one line each: columns not covered, tables and
 * columns it names that the source does not have, rules that do not suit their column. Empty: it applies.
 */
export function maskProblems(policy: MaskPolicy, columns: ColumnFact[]): string[] {
  const problems: string[] = [];
  const tables = new Map<string, ColumnFact[]>();
  for (const column of columns) tables.set(column.table, [...(tables.get(column.table) ?? []), column]);
  for (const [table, named] of Object.entries(policy.tables)) {
    const existing = tables.get(table);
    if (!existing) {
      problems.push(`${table}: the policy names a table the source does not have`);
      continue;
    }
    for (const column of Object.keys(named))
      if (column !== '*' && column !== DELETE_WHERE && !existing.some((fact) => fact.column === column))
        problems.push(`${table}.${column}: the policy names a column the source does not have`);
  }
  const uncovered = uncoveredColumns(policy, columns);
  for (const [table, facts] of tables) {
    const missing = uncovered.filter((column) => column.table === table);
    if (missing.length === 0) continue;
    problems.push(
      missing.length === facts.length && !policy.tables[table]
        ? `${table}: not in the policy (its columns: ${missing.map((column) => column.column).join(', ')})`
        : `${table}: ${missing.map((column) => column.column).join(', ')} not covered by the policy`,
    );
  }
  for (const column of columns) {
    const rule = ruleFor(policy, column);
    const problem = rule === undefined ? undefined : ruleProblem(rule, column);
    if (problem) problems.push(`${column.table}.${column.column}: ${problem}`);
  }
  return problems.length > MAX_LISTED
    ? [...problems.slice(0, MAX_LISTED), `… and ${problems.length - MAX_LISTED} more`]
    : problems;
}

/** A starting policy for the columns given: YAML, each uncovered column `keep` with its type beside it, to be edited. */
export function policyDraft(columns: ColumnFact[]): string {
  const lines = ['tables:'];
  let table = '';
  for (const column of columns) {
    if (column.table !== table) {
      table = column.table;
      lines.push(`  ${JSON.stringify(table)}:`);
    }
    lines.push(`    ${JSON.stringify(column.column)}: keep   # ${column.type}${column.unique ? ', unique' : ''}`);
  }
  return lines.length === 1 ? 'tables: {}   # every column is covered' : lines.join('\n');
}
