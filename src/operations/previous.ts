import * as z from 'zod';
import { PermanentError, ValidationError } from '../errors.js';
import { withClient } from '../postgres/client.js';
import { dropCreatedDatabase, listPreviousDatabases } from '../postgres/databases.js';
import { resolveTarget, withDatabase } from '../postgres/target.js';
import { confirmField, envName, fieldGiven, fieldIs, implies, withRules } from './fields.js';
import { alignColumns, humanSize } from '../units.js';
import { defineOperation } from './operation.js';

const schema = withRules(
  z.strictObject({
    env: envName,
    action: z.enum(['list', 'drop']),
    /** drop: the kept database, by name (see list). */
    name: z.string().min(1).max(63).optional().meta({ description: 'drop: the kept database, as list names it' }),
    confirm: confirmField,
  }),
  [
    {
      path: 'name',
      message: 'drop, and only drop, takes the name',
      broken: (payload) => (payload.action === 'drop') !== (payload.name !== undefined),
      schema: {
        allOf: [
          implies(fieldIs('action', 'drop'), fieldGiven('name')),
          implies(fieldGiven('name'), fieldIs('action', 'drop')),
        ],
      },
    },
  ],
);

const previousDatabase = z.object({
  name: z.string(),
  proven: z.boolean().meta({ description: 'dbops recorded keeping it: only such a one can be dropped here' }),
  sizeBytes: z.number().nullable(),
  note: z.string().meta({ description: 'what replaced it' }),
});

const result = z.union([
  z.object({ action: z.literal('list'), env: z.string(), database: z.string(), previous: z.array(previousDatabase) }),
  z.object({
    action: z.literal('drop'),
    env: z.string(),
    database: z.string(),
    dropped: z.string(),
    sizeBytes: z.number().nullable(),
  }),
]);
export type PreviousResult = z.infer<typeof result>;

/**
 * The earlier versions of an environment's database that restores and copies kept (RESTORE_KEEP_PREVIOUS):
 * they hold the state from before the swap and take space until dropped. Dropping takes only one that
 * dbops' own record proves it kept; a database that merely looks like one is never dropped here.
 */
export const previous = defineOperation({
  type: 'previous',
  queue: 'restore',
  summary: 'list, or drop, the earlier versions of a database that restores and copies kept',
  schema,
  result,
  changes: (payload) => (payload.action === 'drop' ? payload.env : undefined),
  changesWhen: '`action` drop',
  answers: (payload) => payload.action === 'list',
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  examples: [
    { payload: { env: 'staging', action: 'list' } },
    {
      payload: { env: 'staging', action: 'list', name: 'app_prev_20261201T000000' },
      refused: 'name: drop, and only drop, takes the name',
    },
  ],
  async process({ payload, config, ledger, jobId, progress, log }): Promise<PreviousResult> {
    const target = resolveTarget(config, payload.env);
    return withClient(
      withDatabase(target.url, config.PG_MAINTENANCE_DB),
      async (client) => {
        const kept = await listPreviousDatabases(client, target.database, ledger);
        if (payload.action === 'list')
          return { action: 'list', env: target.env, database: target.database, previous: kept };
        const chosen = kept.find((candidate) => candidate.name === payload.name);
        if (!chosen)
          throw new ValidationError(
            `"${payload.name}" is no kept version of ${target.env}'s database (see previous list)`,
            [{ path: 'name', message: 'not a kept version' }],
          );
        if (!chosen.proven)
          throw new PermanentError(
            `"${chosen.name}" looks like a kept version, but dbops has no record of keeping it: it is left alone`,
          );
        progress(10, `dropping ${chosen.name}`);
        await dropCreatedDatabase(client, chosen.name, ledger);
        log(`dropped ${chosen.name} (${chosen.note})`);
        progress(100, 'done');
        return {
          action: 'drop',
          env: target.env,
          database: target.database,
          dropped: chosen.name,
          sizeBytes: chosen.sizeBytes,
        };
      },
      `dbops:previous:${jobId}`,
    );
  },
  describe: (result) =>
    result.action === 'drop'
      ? `dropped ${result.dropped}`
      : result.previous.length === 0
        ? `no kept versions of ${result.database}`
        : alignColumns(
            ['KEPT VERSION', 'SIZE', 'RECORDED', 'NOTE'],
            result.previous.map((kept) => [
              kept.name,
              humanSize(kept.sizeBytes),
              kept.proven ? 'kept by dbops' : 'NOT recorded by dbops',
              kept.note,
            ]),
          ).join('\n'),
});
