import { encodeForPath } from '../job-ids.js';
import type pg from 'pg';
import * as z from 'zod';
import { PermanentError, ValidationError } from '../errors.js';
import { findTable, tableRef, type TableRef } from '../postgres/catalog.js';
import { inTransaction, runScript, withClient } from '../postgres/client.js';
import { withLockedDatabase } from '../postgres/lock.js';
import { resolveTarget } from '../postgres/target.js';
import { confirmField, envName, fieldGiven, fieldIs, implies, withRules } from './fields.js';
import { dropTrigger, readTriggers, setTriggerEnabled, type TriggerRow } from '../postgres/triggers.js';
import { defineOperation, type OperationContext } from './operation.js';

const identifierText = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((value) => !value.includes('\0'), { message: 'must not contain NUL' });

const triggerRefSchema = z.strictObject({ table: identifierText(300), name: identifierText(200) });

const schema = withRules(
  z.strictObject({
    env: envName,
    action: z.enum(['list', 'enable', 'disable', 'create', 'drop']),
    confirm: confirmField,
    /** `schema.table`; looked up in the catalog, never spliced into SQL. */
    table: identifierText(300).optional(),
    name: identifierText(200).optional(),
    /** create: the SQL definition (the CLI reads it from --file). */
    sql: z.string().min(1).max(1_000_000).optional(),
    /** disable: re-enable after this many seconds, from a delayed job that survives this worker. */
    forSeconds: z
      .number()
      .int()
      .min(1)
      .max(30 * 86_400)
      .optional(),
    /** enable/disable exactly these (what a timed disable switched off). */
    triggers: z.array(triggerRefSchema).min(1).max(10_000).optional(),
  }),
  [
    {
      path: 'sql',
      message: 'create needs the SQL definition (--file)',
      broken: (payload) => payload.action === 'create' && !payload.sql,
      schema: implies(fieldIs('action', 'create'), fieldGiven('sql')),
    },
    {
      path: 'sql',
      message: 'only create takes SQL',
      broken: (payload) => payload.action !== 'create' && payload.sql !== undefined,
      schema: implies(fieldGiven('sql'), fieldIs('action', 'create')),
    },
    {
      path: 'name',
      message: 'drop needs the trigger name (--name)',
      broken: (payload) => payload.action === 'drop' && !payload.name,
      schema: implies(fieldIs('action', 'drop'), fieldGiven('name')),
    },
    {
      path: 'forSeconds',
      message: 'only disable takes a duration',
      broken: (payload) => payload.forSeconds !== undefined && payload.action !== 'disable',
      schema: implies(fieldGiven('forSeconds'), fieldIs('action', 'disable')),
    },
    {
      path: 'triggers',
      message: 'only enable and disable take a list',
      broken: (payload) =>
        payload.triggers !== undefined && payload.action !== 'enable' && payload.action !== 'disable',
      schema: implies(fieldGiven('triggers'), { properties: { action: { enum: ['enable', 'disable'] } } }),
    },
  ],
);
type TriggersPayload = z.output<typeof schema>;

const triggerInfo = z.object({
  schema: z.string(),
  table: z.string(),
  name: z.string(),
  enabled: z.boolean(),
  enabledMode: z.string().meta({ description: 'O (origin, the default), D (disabled), R (replica only), A (always)' }),
  timing: z.enum(['BEFORE', 'AFTER', 'INSTEAD OF']),
  level: z.enum(['ROW', 'STATEMENT']),
  events: z.array(z.string()),
  function: z.string(),
  definition: z.string(),
});
export type TriggerInfo = z.infer<typeof triggerInfo>;

const result = z.union([
  z.object({ action: z.literal('list'), triggers: z.array(triggerInfo) }),
  z.object({
    action: z.enum(['enable', 'disable', 'create', 'drop']),
    changed: z.array(z.object({ table: z.string(), name: z.string() })),
    reenableAt: z.string().optional(),
    reenableJobId: z.string().optional(),
  }),
]);
export type TriggersResult = z.infer<typeof result>;

function describeTrigger(row: TriggerRow): TriggerInfo {
  const events = (
    [
      [4, 'INSERT'],
      [8, 'DELETE'],
      [16, 'UPDATE'],
      [32, 'TRUNCATE'],
    ] as const
  )
    .filter(([bit]) => row.type & bit)
    .map(([, event]) => event);
  return {
    schema: row.schema,
    table: row.table,
    name: row.name,
    enabled: row.mode !== 'D',
    enabledMode: row.mode,
    timing: row.type & 64 ? 'INSTEAD OF' : row.type & 2 ? 'BEFORE' : 'AFTER',
    level: row.type & 1 ? 'ROW' : 'STATEMENT',
    events,
    function: row.function,
    definition: row.definition,
  };
}

async function listTriggers(client: pg.ClientBase): Promise<TriggerInfo[]> {
  return (await readTriggers(client)).map(describeTrigger);
}

interface ResolvedTrigger {
  table: TableRef;
  name: string;
  enabled: boolean;
}

/** The triggers a command names: one, all on a table, a list, or every user trigger of the database. */
async function resolveTriggers(client: pg.ClientBase, payload: TriggersPayload): Promise<ResolvedTrigger[]> {
  const all = await listTriggers(client);
  const toResolved = (trigger: TriggerInfo): ResolvedTrigger => ({
    table: tableRef(trigger.schema, trigger.table),
    name: trigger.name,
    enabled: trigger.enabled,
  });
  if (payload.triggers) {
    const found: ResolvedTrigger[] = [];
    for (const wanted of payload.triggers) {
      const table = await findTable(client, wanted.table);
      const match = all.find(
        (trigger) => trigger.schema === table.schema && trigger.table === table.table && trigger.name === wanted.name,
      );
      if (match) found.push(toResolved(match));
    }
    return found;
  }
  const table = payload.table ? await findTable(client, payload.table) : undefined;
  const matches = all.filter(
    (trigger) =>
      (!table || (trigger.schema === table.schema && trigger.table === table.table)) &&
      (!payload.name || trigger.name === payload.name),
  );
  if (payload.name && matches.length === 0) {
    throw new ValidationError(`no trigger "${payload.name}"${table ? ` on ${table.schema}.${table.table}` : ''}`);
  }
  if (payload.name && matches.length > 1) {
    throw new ValidationError(
      `trigger "${payload.name}" is on several tables (${matches.map((m) => `${m.schema}.${m.table}`).join(', ')}): add --table`,
    );
  }
  return matches.map(toResolved);
}

const named = (trigger: ResolvedTrigger) => ({
  table: `${trigger.table.schema}.${trigger.table.table}`,
  name: trigger.name,
});

async function change(context: OperationContext<TriggersPayload>, client: pg.ClientBase): Promise<TriggersResult> {
  const { payload, jobId } = context;
  if (payload.action === 'create') {
    return inTransaction(client, async () => {
      const before = new Set((await listTriggers(client)).map((t) => `${t.schema}.${t.table}.${t.name}`));
      await runScript(client, payload.sql!);
      const created = (await listTriggers(client)).filter((t) => !before.has(`${t.schema}.${t.table}.${t.name}`));
      if (created.length === 0) throw new PermanentError('the SQL ran but created no trigger; nothing was changed');
      return {
        action: 'create' as const,
        changed: created.map((t) => ({ table: `${t.schema}.${t.table}`, name: t.name })),
      };
    });
  }

  const targets = await resolveTriggers(client, payload);
  if (payload.action === 'drop') {
    const [trigger] = targets;
    await inTransaction(client, () => dropTrigger(client, trigger!.table, trigger!.name));
    return { action: 'drop', changed: [named(trigger!)] };
  }

  const enable = payload.action === 'enable';
  const toChange = targets.filter((trigger) => trigger.enabled !== enable);
  let reenable: { reenableAt: string; reenableJobId: string } | undefined;
  if (!enable && payload.forSeconds && toChange.length > 0) {
    // Enqueued before anything is disabled: if this worker dies right after, the triggers still come back.
    // A derived id must be one BullMQ accepts as custom (no ':', not a number), whatever this job's id is.
    const reenableJobId = `triggers-reenable-${encodeForPath(jobId.replace(/^triggers-/, ''))}`;
    await context.enqueue(
      'triggers',
      { env: payload.env, action: 'enable', triggers: toChange.map(named), confirm: payload.confirm },
      { jobId: reenableJobId, delayMs: payload.forSeconds * 1000 },
    );
    reenable = { reenableAt: new Date(Date.now() + payload.forSeconds * 1000).toISOString(), reenableJobId };
    context.log(`re-enable scheduled as job ${reenableJobId} at ${reenable.reenableAt}`);
  }
  await inTransaction(client, async () => {
    for (const trigger of toChange) {
      await setTriggerEnabled(client, trigger.table, trigger.name, enable);
      context.log(
        `${enable ? 'enabled' : 'disabled'} ${trigger.name} on ${trigger.table.schema}.${trigger.table.table}`,
      );
    }
  });
  return { action: enable ? 'enable' : 'disable', changed: toChange.map(named), ...reenable };
}

export const triggers = defineOperation({
  type: 'triggers',
  summary: 'list, enable, disable, create and drop triggers',
  schema,
  result,
  changes: (payload) => (payload.action === 'list' ? undefined : payload.env),
  changesWhen: 'every `action` but list',
  answers: (payload) => payload.action === 'list',
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  examples: [
    { payload: { env: 'staging', action: 'list' } },
    { payload: { env: 'staging', action: 'disable', table: 'public.film', forSeconds: 600 } },
    { payload: { env: 'staging', action: 'create' }, refused: 'sql: create needs the SQL definition (--file)' },
    {
      payload: { env: 'staging', action: 'enable', forSeconds: 60 },
      refused: 'forSeconds: only disable takes a duration',
    },
    {
      payload: { env: 'staging', action: 'drop', table: 'public.film' },
      refused: 'name: drop needs the trigger name (--name)',
    },
  ],
  async process(context): Promise<TriggersResult> {
    const { payload, config, jobId, signal, progress } = context;
    const target = resolveTarget(config, payload.env);
    if (payload.action === 'list') {
      // Read-only: no database lock.
      return withClient(
        target.url,
        async (client) => ({ action: 'list', triggers: await listTriggers(client) }),
        `dbops:triggers:${jobId}`,
        target.env,
      );
    }
    return withLockedDatabase(
      target,
      { maintenanceDb: config.PG_MAINTENANCE_DB, holder: `dbops:triggers:${jobId}`, signal, progress },
      async (client) => {
        progress(10, `${payload.action} triggers`);
        const result = await change(context, client);
        progress(100, 'done');
        return result;
      },
    );
  },
  describe(result) {
    if (result.action === 'list') {
      if (result.triggers.length === 0) return 'no triggers';
      return result.triggers
        .map(
          (t) =>
            `${t.schema}.${t.table}\t${t.name}\t${t.enabled ? 'enabled' : 'DISABLED'}\t${t.timing} ${t.events.join('|')} ${t.level}\t${t.function}`,
        )
        .join('\n');
    }
    const what = result.changed.map((t) => `${t.table}.${t.name}`).join(', ') || 'nothing to change';
    return `${result.action}: ${what}${result.reenableAt ? ` (re-enabled at ${result.reenableAt} by job ${result.reenableJobId})` : ''}`;
  },
});
