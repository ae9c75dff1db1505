import * as z from 'zod';
import { columnFacts } from '../postgres/catalog.js';
import { connect } from '../postgres/client.js';
import { resolveTarget } from '../postgres/target.js';
import { envName } from './fields.js';
import { maskPolicySchema, maskProblems, policyDraft, uncoveredColumns } from './mask-policy.js';
import { defineOperation } from './operation.js';

/*
 * `copy --from E --mask-report [--mask POLICY]`: the columns of E's tables a policy does not cover (every
 * column without one), as a starting policy to edit, and what else the policy's copy would refuse.
 * Reads the source's catalog only; runs on the copy workers, which reach the sources.
 */

const schema = z.strictObject({
  from: envName,
  mask: maskPolicySchema.optional(),
});

const result = z.object({
  from: z.string(),
  columns: z.number().int().meta({ description: "the columns of the source's tables" }),
  uncovered: z
    .array(z.object({ table: z.string(), column: z.string(), type: z.string(), unique: z.boolean() }))
    .meta({ description: 'the columns the policy does not cover, in table and column order' }),
  problems: z.array(z.string()).meta({ description: 'everything the copy would refuse the policy for' }),
  draft: z.string().meta({ description: 'the uncovered columns as a policy (YAML), each `keep`, to be edited' }),
});
export type MaskReportResult = z.infer<typeof result>;

export const maskreport = defineOperation({
  type: 'maskreport',
  queue: 'copy',
  summary: "the columns of an environment's tables that a masking policy does not cover, as a starting policy",
  schema,
  result,
  answers: () => true,
  precheck(payload, config) {
    resolveTarget(config, payload.from, 'from');
  },
  examples: [{ payload: { from: 'production' } }],
  async process(context): Promise<MaskReportResult> {
    const { payload, config, jobId } = context;
    const source = resolveTarget(config, payload.from);
    context.progress(10, `reading ${source.env}'s columns`);
    const client = await connect(source.url, `dbops:maskreport:${jobId}`, source.env);
    try {
      const facts = await columnFacts(client);
      const uncovered = uncoveredColumns(payload.mask, facts);
      return {
        from: source.env,
        columns: facts.length,
        uncovered: uncovered.map(({ table, column, type, unique }) => ({ table, column, type, unique })),
        problems: payload.mask ? maskProblems(payload.mask, facts) : [],
        draft: policyDraft(uncovered),
      };
    } finally {
      await client.end().catch(() => undefined);
    }
  },
  describe: (result) =>
    result.uncovered.length === 0 && result.problems.length === 0
      ? `the policy covers every one of ${result.from}'s ${result.columns} columns`
      : [
          `# ${result.uncovered.length} of ${result.from}'s ${result.columns} columns not covered${result.problems.length ? `; the copy would refuse the policy: ${result.problems.join('; ')}` : ''}`,
          result.draft,
        ].join('\n'),
});
