import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OperationContract } from '../src/queue/contract.js';
import { progressOf } from '../src/queue/job-facts.js';
import type { RunningServer } from '../src/server/app.js';
import { sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';

const TOKEN = 'job-contract-token-0123456789';
const FIXTURES = path.resolve(import.meta.dirname, 'fixtures');

/*
 * The served JSON Schemas and the worker agree: every example of docs/jobs.md (the operations' own
 * examples) is fed to a JSON Schema validator with the served schema, and to POST /api/v1/validate,
 * which answers what the worker would. Both accept it, or both refuse it, for the reason it names.
 */
describe('the job contract: served schemas and the worker agree on every example', () => {
  let rig: Rig;
  let server: RunningServer;
  const api = (route: string, init: RequestInit = {}) =>
    fetch(`${server.url}${route}`, {
      ...init,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    });

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'production', MIGRATIONS_ROOT: FIXTURES });
    for (const name of ['production', 'staging']) {
      await sql('postgres', `CREATE DATABASE "${rig.db(name)}"`);
      rig.setEnv(name, rig.db(name));
    }
    await sql(rig.db('production'), 'CREATE TABLE film (film_id int PRIMARY KEY, title text)');
    await sql(rig.db('staging'), 'CREATE TABLE film (film_id int PRIMARY KEY, title text)');
    // `latest: production` needs a verified backup of production.
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    const backup = await rig.cli(['backup', '--env', 'production', '--wait']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const verify = await rig.cli(['backups', 'verify', '--latest', 'production', '--wait']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    server = await startTestServer(rig, { API_TOKEN: TOKEN });
  }, 180_000);
  afterAll(async () => {
    await server?.close();
    await rig?.cleanup();
  });

  it('serves every operation with examples, the progress shape, and its rules as allOf', async () => {
    const contracts = (await (await api('/api/v1/schemas')).json()) as OperationContract[];
    expect(contracts.length).toBeGreaterThanOrEqual(9);
    for (const contract of contracts) {
      expect(contract.examples.length, contract.type).toBeGreaterThan(0);
      expect(
        contract.examples.some((example) => !example.refused),
        contract.type,
      ).toBe(true);
      expect(contract.progress).toMatchObject({ required: ['percent', 'step'] });
    }
    const restore = contracts.find((contract) => contract.type === 'restore')!;
    expect((restore.payload.allOf as unknown[]).length).toBe(4);
  });

  it('the schema and the validate call accept and refuse the same examples, for the reason given', async () => {
    const contracts = (await (await api('/api/v1/schemas')).json()) as OperationContract[];
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    let checked = 0;
    for (const contract of contracts) {
      const schemaAccepts = ajv.compile(contract.payload);
      for (const example of contract.examples) {
        const label = `${contract.type} ${JSON.stringify(example.payload)}`;
        expect(schemaAccepts(example.payload), `${label}: the served schema`).toBe(!example.refused);
        const answer = await api(`/api/v1/validate/${contract.type}`, {
          method: 'POST',
          body: JSON.stringify(example.payload),
        });
        const body = (await answer.json()) as {
          valid: boolean;
          error?: string;
          issues?: { path: string; message: string }[];
        };
        expect({ status: answer.status, valid: body.valid }, `${label}: the worker (${body.error})`).toEqual(
          example.refused ? { status: 400, valid: false } : { status: 200, valid: true },
        );
        if (example.refused)
          expect(body.issues!.map((issue) => `${issue.path}: ${issue.message}`)).toContain(example.refused);
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(30);
  });

  it('validate enqueues nothing, and answers what the schema cannot say (confirm, unknown environment) as the worker would', async () => {
    const before = await rig.queueKeys();
    const unconfirmed = await api('/api/v1/validate/restore', {
      method: 'POST',
      body: JSON.stringify({ env: 'production', latest: 'production' }),
    });
    expect(unconfirmed.status).toBe(400);
    expect(await unconfirmed.json()).toMatchObject({
      valid: false,
      issues: [{ path: 'confirm', message: 'must equal "production"' }],
    });
    const unknown = await api('/api/v1/validate/backup', { method: 'POST', body: '{"env":"nowhere"}' });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: string }).error).toContain('unknown environment "nowhere"');
    const fine = await api('/api/v1/validate/copy', {
      method: 'POST',
      body: JSON.stringify({ from: 'production', to: 'staging' }),
    });
    expect(await fine.json()).toMatchObject({ valid: true, payload: { from: 'production', to: 'staging', jobs: 1 } });
    expect(await rig.queueKeys()).toEqual(before);
  });

  it('progress has one shape in every state, and a completed job is at 100 % whatever was last reported', () => {
    expect(progressOf(0, 'waiting')).toEqual({ percent: 0, step: '' });
    expect(progressOf(undefined, 'active')).toEqual({ percent: 0, step: '' });
    expect(progressOf(42, 'active')).toEqual({ percent: 42, step: '' });
    expect(progressOf({ percent: 37.5, step: 'restoring public.film' }, 'active')).toEqual({
      percent: 37.5,
      step: 'restoring public.film',
    });
    expect(progressOf({ percent: 'x', step: 7 }, 'failed')).toEqual({ percent: 0, step: '' });
    expect(progressOf(0, 'completed')).toEqual({ percent: 100, step: '' });
    expect(progressOf({ percent: 0, step: 'starting' }, 'completed')).toEqual({ percent: 100, step: 'starting' });
  });
});
