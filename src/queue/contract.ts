import * as z from 'zod';
import type { Config } from '../config.js';
import { getOperation, operationTypes, queueOf, type OperationType } from '../operations/index.js';
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
}

export function operationContract(type: OperationType, config: Config): OperationContract {
  const operation = getOperation(type);
  return {
    type,
    summary: operation.summary,
    queue: queueOf(type),
    jobName: type,
    confirm: operation.changes ? (operation.changesWhen ?? 'when it changes the environment') : null,
    payload: z.toJSONSchema(operation.schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>,
    result: z.toJSONSchema(operation.result, { io: 'output', unrepresentable: 'any' }) as Record<string, unknown>,
    jobOptions: { ...jobOptionsFor(config, type) },
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
    lines.push('', '**Result**', '');
    for (const [index, variant] of objectVariants(contract.result).entries()) {
      if (index > 0) lines.push('', 'or', '');
      lines.push('| field | type | always | notes |', '| --- | --- | --- | --- |', ...fieldRows(variant, false));
    }
  }
  return `${lines.join('\n')}\n`;
}
