import express, { type Router } from 'express';
import { BackupStore } from '../backups/store.js';
import type { Config } from '../config.js';
import { ValidationError } from '../errors.js';
import { isOperationType } from '../operations/index.js';
import type { Producer } from '../queue/producer.js';
import { typeOfJobId } from '../queue/queues.js';
import { bearerAuth } from './auth.js';

/**
 * The HTTP API for applications: enqueue a job, follow it, list backups. Payloads are validated with
 * the same zod schemas (and configuration checks) as the CLI's and the producer's.
 */
export function apiRouter(config: Config, producer: Producer): Router {
  const router = express.Router();
  if (!config.API_TOKEN) {
    router.use((_req, res) => res.status(404).json({ error: 'the HTTP API is off: set API_TOKEN to turn it on' }));
    return router;
  }
  router.use(bearerAuth(config.API_TOKEN));
  router.use(express.json({ limit: config.API_BODY_LIMIT, strict: true }));

  router.post('/jobs/:type', async (req, res) => {
    const { type } = req.params;
    if (!isOperationType(type)) return res.status(404).json({ error: `unknown operation type "${type}"` });
    try {
      const job = await producer.enqueue(type, req.body ?? {});
      return res.status(202).json({ id: job.id });
    } catch (error) {
      if (error instanceof ValidationError) return res.status(400).json({ error: error.message, issues: error.issues });
      throw error;
    }
  });

  router.get('/jobs/:type/:id', async (req, res) => {
    const { type, id } = req.params;
    if (!isOperationType(type) || typeOfJobId(id) !== type) return res.status(404).json({ error: `no ${type} job "${id}"` });
    const job = await producer.getJob(id);
    if (!job) return res.status(404).json({ error: `no ${type} job "${id}"` });
    const summary = await producer.summarize(job);
    return res.json({ id: summary.id, state: summary.state, progress: summary.progress, result: summary.result, failedReason: summary.failedReason });
  });

  router.get('/backups', async (req, res) => {
    const env = typeof req.query.env === 'string' ? req.query.env : undefined;
    res.json(await new BackupStore(config.backupDir).list({ env }));
  });

  return router;
}
