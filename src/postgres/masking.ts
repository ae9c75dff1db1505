import type pg from 'pg';
import { tableRefOf, type ColumnFact } from './catalog.js';
import { inTransaction, quoteIdent, quoteLiteral } from './client.js';

/*
 * The masking rules as SQL, run in a copy's shadow database before it becomes visible. Fakes and hashes
 * are made from md5/sha256 of the seed and the value: the same value masks to the same result (a join
 * on a masked email still matches), different values to different results (a unique column stays
 * unique), and NULL stays NULL.
 */

export const MASK_RULES = [
  'keep',
  'null',
  'fake_email',
  'fake_name',
  'fake_phone',
  'hash',
  'truncate_month',
  'shuffle',
] as const;
export type MaskRuleName = (typeof MASK_RULES)[number];
export type MaskRule = MaskRuleName | { value: string | number | boolean | null };

export interface TableMask {
  /** `schema.table`, unquoted. */
  table: string;
  columns: { fact: ColumnFact; rule: MaskRule }[];
  /** An SQL condition: matching rows are deleted first. */
  deleteWhere?: string;
  partitioned: boolean;
}

export interface MaskedTable {
  table: string;
  columns: number;
  rowsDeleted: number;
  rowsMasked: number;
}

const NAMES = [
  'Alex',
  'Sam',
  'Robin',
  'Kim',
  'Jo',
  'Lee',
  'Noor',
  'Ari',
  'Sasha',
  'Eden',
  'Remy',
  'Quinn',
  'Avery',
  'Jules',
  'Kai',
  'Mika',
  'Nico',
  'Rene',
  'Toni',
  'Yuri',
  'Dana',
  'Evan',
  'Ira',
  'Luca',
];

/** The SQL expression a rule sets a column to; `seed` is the seed's parameter, `value` adds a parameter. */
function expression(
  rule: Exclude<MaskRule, 'keep' | 'shuffle'>,
  fact: ColumnFact,
  seed: string,
  value: (v: unknown) => string,
): string {
  const x = quoteIdent(fact.column);
  const digest = `md5(${seed} || ${x}::text)`;
  const fit = (sql: string, longest: number) =>
    fact.maxLength !== null && fact.maxLength < longest ? `left(${sql}, ${fact.maxLength})` : sql;
  if (typeof rule === 'object') return value(rule.value);
  switch (rule) {
    case 'null':
      return 'NULL';
    case 'fake_email':
      return `'user_' || substr(${digest}, 1, 16) || '@example.invalid'`;
    case 'fake_name': {
      const list = `(ARRAY[${NAMES.map((name) => `'${name}'`).join(', ')}])[1 + get_byte(decode(${digest}, 'hex'), 0) % ${NAMES.length}]`;
      return fit(fact.unique ? `${list} || '-' || substr(${digest}, 1, 12)` : list, fact.unique ? 24 : 10);
    }
    case 'fake_phone':
      return `'+1-555-' || substr(translate(${digest}, 'abcdef', '012345'), 1, 10)`;
    case 'hash':
      return fit(`encode(sha256(convert_to(${seed} || ${x}::text, 'UTF8')), 'hex')`, 64);
    case 'truncate_month':
      return `date_trunc('month', ${x})::${fact.type}`;
  }
}

/**
 * Applies each table's rules in one transaction: the rows its condition names deleted, every masked
 * column set in one UPDATE, each shuffled column permuted. The tables' own triggers do not fire (a
 * `last_update` trigger would change a column the policy keeps); foreign keys are still checked.
 */
export async function applyMasks(
  client: pg.ClientBase,
  tables: TableMask[],
  seed: string,
  onTable: (table: string, index: number) => void = () => undefined,
): Promise<MaskedTable[]> {
  const done: MaskedTable[] = [];
  for (const [index, mask] of tables.entries()) {
    onTable(mask.table, index);
    const table = tableRefOf(mask.table).sql;
    // An inheritance parent's statements leave its children to their own rules; a partitioned table's reach its partitions.
    const only = mask.partitioned ? '' : 'ONLY ';
    const params: unknown[] = [];
    const value = (v: unknown) => {
      params.push(v);
      return `$${params.length}`;
    };
    const sets = mask.columns
      .filter(({ rule }) => rule !== 'keep' && rule !== 'shuffle')
      .map(
        ({ fact, rule }) =>
          `${quoteIdent(fact.column)} = ${expression(rule as Exclude<MaskRule, 'keep' | 'shuffle'>, fact, `${quoteLiteral(seed)}::text`, value)}`,
      );
    const shuffled = mask.columns.filter(({ rule }) => rule === 'shuffle').map(({ fact }) => quoteIdent(fact.column));
    const counts = await inTransaction(client, async () => {
      // The table's own enabled triggers, each put back as it was (a trigger disabled in the source stays so).
      const { rows: triggers } = await client.query<{ name: string; enabled: string }>(
        `SELECT tgname AS name, tgenabled AS enabled FROM pg_trigger
          WHERE tgrelid = $1::regclass AND NOT tgisinternal AND tgenabled <> 'D'`,
        [table],
      );
      for (const trigger of triggers)
        await client.query(`ALTER TABLE ${table} DISABLE TRIGGER ${quoteIdent(trigger.name)}`);
      const deleted = mask.deleteWhere
        ? ((await client.query(`DELETE FROM ${only}${table} WHERE (${mask.deleteWhere})`)).rowCount ?? 0)
        : 0;
      const masked = sets.length
        ? ((await client.query(`UPDATE ${only}${table} SET ${sets.join(', ')}`, params)).rowCount ?? 0)
        : 0;
      for (const column of shuffled) {
        await client.query(
          `WITH old AS (SELECT tableoid AS part, ctid AS id, row_number() OVER (ORDER BY random()) AS n FROM ${only}${table}),
                new AS (SELECT ${column} AS v, row_number() OVER (ORDER BY random()) AS n FROM ${only}${table})
           UPDATE ${only}${table} t SET ${column} = new.v FROM old JOIN new USING (n)
            WHERE t.tableoid = old.part AND t.ctid = old.id`,
        );
      }
      for (const trigger of triggers) {
        const how = trigger.enabled === 'A' ? 'ALWAYS ' : trigger.enabled === 'R' ? 'REPLICA ' : '';
        await client.query(`ALTER TABLE ${table} ENABLE ${how}TRIGGER ${quoteIdent(trigger.name)}`);
      }
      return { deleted, masked };
    });
    done.push({
      table: mask.table,
      columns: sets.length + shuffled.length,
      rowsDeleted: counts.deleted,
      rowsMasked: counts.masked,
    });
  }
  return done;
}
