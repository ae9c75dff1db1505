import express, { type Request, type Router } from 'express';
import { BackupCatalogue } from '../backups/catalogue.js';
import { sendArchive } from './archive.js';
import { normalizeEnvName, type Config } from '../config.js';
import { ValidationError } from '../errors.js';
import { formatJobReference } from '../job-ids.js';
import { isOperationType } from '../operations/index.js';
import { jobContract, operationContract } from '../queue/contract.js';
import type { Producer } from '../queue/producer.js';
import { bearerAuth } from './auth.js';

function hasBody(req: Request): boolean {
  return Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
}

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
  // A body in another content type would not be read: say so, rather than validate an empty payload.
  router.use((req, res, next) => {
    if (req.method !== 'POST' || !hasBody(req) || req.is('application/json')) return next();
    res.status(415).json({
      error: `send the payload as JSON with Content-Type: application/json (got ${req.headers['content-type'] ?? 'none'})`,
    });
  });
  router.use(express.json({ limit: config.API_BODY_LIMIT, strict: false }));

  router.post('/jobs/:type', async (req, res) => {
    const { type } = req.params;
    if (!isOperationType(type)) return res.status(404).json({ error: `unknown operation type "${type}"` });
    // An empty body is an empty payload; anything else is validated as it came, like every producer's.
    const payload: unknown = hasBody(req) ? req.body : {};
    try {
      const job = await producer.enqueue(type, payload as never);
      return res.status(202).json({ id: job.id });
    } catch (error) {
      if (error instanceof ValidationError) return res.status(400).json({ error: error.message, issues: error.issues });
      throw error;
    }
  });

  router.get('/jobs/:type/:id', async (req, res) => {
    const { type, id } = req.params;
    if (!isOperationType(type)) return res.status(404).json({ error: `unknown operation type "${type}"` });
    const job = await producer.getJob(formatJobReference(type, id));
    if (!job) return res.status(404).json({ error: `no ${type} job "${id}"` });
    const summary = await producer.summarize(job);
    return res.json({
      id: summary.id,
      state: summary.state,
      progress: summary.progress,
      result: summary.result,
      failedReason: summary.failedReason,
    });
  });

  router.get('/schemas', (_req, res) => {
    res.json(jobContract(config));
  });

  router.get('/schemas/:type', (req, res) => {
    const { type } = req.params;
    if (!isOperationType(type)) return res.status(404).json({ error: `unknown operation type "${type}"` });
    return res.json(operationContract(type, config));
  });

  /** A backup's archive as it is stored (encrypted ones stay encrypted), with its sha256 to check. */
  router.get('/backups/:id/archive', (req, res) =>
    sendArchive(
      res,
      BackupCatalogue.of(config),
      req.params.id,
      typeof req.query.store === 'string' ? req.query.store : undefined,
      (status, error) => res.status(status).json({ error }),
    ),
  );

  router.get('/backups', async (req, res) => {
    const env = typeof req.query.env === 'string' ? normalizeEnvName(req.query.env) : undefined;
    const store = typeof req.query.store === 'string' ? req.query.store : undefined;
    try {
      res.json(
        (await BackupCatalogue.of(config).listWithStores({ env, store })).map(({ manifest, stores }) => ({
          ...manifest,
          heldBy: stores,
        })),
      );
    } catch (error) {
      if (error instanceof ValidationError) return res.status(400).json({ error: error.message });
      throw error;
    }
  });

  return router;
}
