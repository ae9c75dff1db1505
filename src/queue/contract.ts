import * as z from 'zod';
import type { Config } from '../config.js';
import { getOperation, operationTypes, queueOf, type OperationType } from '../operations/index.js';
import type { PayloadExample } from '../operations/operation.js';
import { jobOptionsFor } from './queues.js';

/*
 * The job contract, for producers that are not dbops' own (bullmq-python, scripts): which queue and job
 * name, the payload and result as JSON Schema (draft 2020-12, generated from the zod schemas the workers
 * validate with), when `confirm` is needed, and the job options dbops' own producer sets.
 */

export interface OperationContract {
  type: OperationType;
  summary: string;
  /** The BullMQ queue (under QUEUE_PREFIX) that holds these jobs. */
  queue: string;
  /** The job name: the operation's type. */
  jobName: OperationType;
  /** When the job changes an environment's database or backups: `confirm` must then name a protected one. */
  confirm: string | null;
  payload: Record<string, unknown>;
  result: Record<string, unknown>;
  /** What dbops' producer sets; workers apply the retention to jobs added without it. */
  jobOptions: Record<string, unknown>;
  /** A job's `progress` as the API answers it, whatever the state. */
  progress: Record<string, unknown>;
  /** Payloads the worker runs, and ones it refuses with the reason (see Operation.examples). */
  examples: PayloadExample[];
}

/** The one progress shape: `{percent, step}`, also before the worker's first report (`{0, ""}`). */
export const PROGRESS_SCHEMA = {
  type: 'object',
  properties: {
    percent: { type: 'number', minimum: 0, maximum: 100 },
    step: { type: 'string', description: "what the job is doing now ('' before the worker's first report)" },
  },
  required: ['percent', 'step'],
  additionalProperties: false,
} as const;

/** Rules the JSON Schema cannot say (they depend on the configuration and the stores): the worker's and the validate call's alone. */
export const CONFIGURATION_RULES = [
  'an environment named (`env`, `from`, `to`, `latest`) is one the workers are configured with (`DATABASE_URL_<ENV>`)',
  "a job that changes a protected environment carries `confirm` equal to that environment's name",
  "a backup named by id exists in a store, and is signed as dbops' own",
  '`latest` needs a backup of that environment (restore: a verified one; `atRevision`: one at that revision)',
  "a migrate job's `dir` lies inside `MIGRATIONS_ROOT` and holds migrations of a kind dbops runs",
  'a copy goes between two different databases',
  'a prune has a retention policy (`policy`, else `BACKUP_RETENTION[_<ENV>]`) that reads as `last=N,daily=N,...`',
  'a store named is one of `BACKUP_STORES`; an encrypted backup is of the custom format',
];

/** An operation's payload as JSON Schema, as other producers validate it (and the CLI's flags are derived from it). */
export function payloadJsonSchema(type: OperationType): Record<string, unknown> {
  return z.toJSONSchema(getOperation(type).schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

export function operationContract(type: OperationType, config: Config): OperationContract {
  const operation = getOperation(type);
  return {
    type,
    summary: operation.summary,
    queue: queueOf(type),
    jobName: type,
    confirm: operation.changes ? (operation.changesWhen ?? 'when it changes the environment') : null,
    payload: payloadJsonSchema(type),
    result: z.toJSONSchema(operation.result, { io: 'output', unrepresentable: 'any' }) as Record<string, unknown>,
    jobOptions: { ...jobOptionsFor(config, type) },
    progress: { ...PROGRESS_SCHEMA },
    examples: operation.examples ?? [],
  };
}

export function jobContract(config: Config): OperationContract[] {
  return operationTypes.map((type) => operationContract(type, config));
}

type JsonSchema = Record<string, unknown> & {
  type?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
};

/** A schema in a few words: its type and its constraints. */
function describeSchema(schema: JsonSchema): string {
  const parts: string[] = [];
  if (schema.anyOf) return (schema.anyOf as JsonSchema[]).map(describeSchema).join(' or ');
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return (schema.enum as unknown[]).map((value) => JSON.stringify(value)).join(' \\| ');
  if (schema.type === 'array')
    parts.push(`array of ${schema.items ? describeSchema(schema.items as JsonSchema) : 'any'}`);
  else if (schema.type === 'object' && !schema.properties) parts.push('object');
  else if (schema.type === 'object') parts.push(`object {${Object.keys(schema.properties ?? {}).join(', ')}}`);
  else parts.push(String(schema.type ?? 'any'));
  for (const key of ['minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems', 'pattern'] as const) {
    if (schema[key] === Number.MAX_SAFE_INTEGER || schema[key] === Number.MIN_SAFE_INTEGER) continue; // zod's int() bounds: no constraint
    if (schema[key] !== undefined)
      parts.push(`${key} ${key === 'pattern' ? `\`${String(schema[key])}\`` : String(schema[key])}`);
  }
  return parts.join(', ');
}

function fieldRows(schema: JsonSchema, withDefaults: boolean): string[] {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {}).map(([name, field]) => {
    const cells = [`\`${name}\``, describeSchema(field).replace(/\|(?! )/g, '\\|'), required.has(name) ? 'yes' : ''];
    if (withDefaults) cells.push(field.default === undefined ? '' : `\`${JSON.stringify(field.default)}\``);
    cells.push(typeof field.description === 'string' ? field.description : '');
    return `| ${cells.join(' | ')} |`;
  });
}

function objectVariants(schema: JsonSchema): JsonSchema[] {
  return schema.anyOf ? (schema.anyOf as JsonSchema[]) : [schema];
}

/** docs/jobs.md, generated from the catalogue (`npm run docs:jobs`); a test fails when it is stale. */
export function renderJobsDoc(config: Config): string {
  const lines = [
    '# The job contract',
    '',
    '<!-- Generated from the operation catalogue by `npm run docs:jobs`; do not edit by hand. -->',
    '',
    'Every operation is a BullMQ job: add it to the queue named below (under `QUEUE_PREFIX`, default `dbops`)',
    'with the job name below and the payload as its data. Any BullMQ producer will do; the workers validate',
    'every job again (schema, configuration, `confirm`) whoever added it, and refuse a completed job that',
    'changed something if it is ever put back. The same schemas, as JSON Schema, are served at',
    '`GET /api/v1/schemas[/<type>]` and printed by `manage-db schema [<type>]`.',
    '',
    "Job options: dbops' own producer sets those listed per operation. A worker applies the same retention",
    '(`removeOnComplete`, `removeOnFail`) to a job added without it. Retries are BullMQ job options that',
    'only the producer can set: without `attempts` and `backoff` a transient failure (a lost connection)',
    'fails the job at once, so set them as shown.',
    '',
    "A job's `progress`, as `GET /api/v1/jobs/<type>/<id>` and `manage-db jobs show --json` answer it, is",
    'always `{"percent": N, "step": "..."}` (N from 0 to 100): `{"percent": 0, "step": ""}` before the worker\'s',
    'first report, and `percent` 100 once completed. (BullMQ itself holds a bare `0` until the first report:',
    'another producer reading the job directly sees that.)',
    '',
    "Rules between fields are in each payload's JSON Schema (`allOf`, each with its `description`), and listed",
    'per operation below. What no schema can say, because it depends on the configuration and the stores, the',
    'worker checks, and so does `POST /api/v1/validate/<type>` (nothing enqueued):',
    '',
    ...CONFIGURATION_RULES.map((rule) => `- ${rule}`),
    '',
    'The examples below are on environments `production` (protected) and `staging`; tests feed each to the',
    'served schema and to the validate call, which must both accept or both refuse it.',
    '',
    '| operation | queue | `confirm` needed on a protected environment | what it does |',
    '| --- | --- | --- | --- |',
  ];
  const contracts = jobContract(config);
  for (const contract of contracts) {
    lines.push(
      `| [\`${contract.type}\`](#${contract.type}) | \`${contract.queue}\` | ${contract.confirm ?? 'never'} | ${contract.summary} |`,
    );
  }
  for (const contract of contracts) {
    lines.push('', `## ${contract.type}`, '', contract.summary, '');
    lines.push(`- queue \`${contract.queue}\`, job name \`${contract.jobName}\``);
    lines.push(
      `- \`confirm\` (the environment's name again) needed on a protected environment: ${contract.confirm ?? 'never'}`,
    );
    lines.push(`- job options dbops sets: \`${JSON.stringify(contract.jobOptions)}\``);
    lines.push(
      '',
      '**Payload**',
      '',
      '| field | type and constraints | required | default | notes |',
      '| --- | --- | --- | --- | --- |',
    );
    lines.push(...fieldRows(contract.payload, true));
    const rules = ((contract.payload.allOf ?? []) as JsonSchema[]).map((rule) => String(rule.description));
    if (rules.length > 0) lines.push('', '**Rules**', '', ...rules.map((rule) => `- ${rule}`));
    if (contract.examples.length > 0) {
      lines.push('', '**Examples**', '');
      for (const example of contract.examples)
        lines.push(
          `- \`${JSON.stringify(example.payload)}\`: ${example.refused ? `refused (${example.refused})` : 'runs'}`,
        );
    }
    lines.push('', '**Result**', '');
    for (const [index, variant] of objectVariants(contract.result).entries()) {
      if (index > 0) lines.push('', 'or', '');
      lines.push('| field | type | always | notes |', '| --- | --- | --- | --- |', ...fieldRows(variant, false));
    }
  }
  return `${lines.join('\n')}\n`;
}
