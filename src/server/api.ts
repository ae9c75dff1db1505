import express, {
  type ErrorRequestHandler,
  type Request,
  type RequestHandler,
  type Response,
  type Router,
} from 'express';
import { BackupCatalogue } from '../backups/catalogue.js';
import type { Manifest } from '../backups/manifest.js';
import { sendArchive } from './archive.js';
import { normalizeEnvName, type Config } from '../config.js';
import { ValidationError } from '../errors.js';
import { formatJobReference } from '../job-ids.js';
import { isOperationType, type OperationType } from '../operations/index.js';
import { validatePayload } from '../operations/validate.js';
import { lastConnectionError } from '../queue/connection.js';
import { jobContract, operationContract } from '../queue/contract.js';
import { historyFilterOf } from '../queue/history-entry.js';
import { JOB_FILTER_WORDS, parseJobFilter, type JobFilter } from '../queue/job-filter.js';
import type { Producer } from '../queue/producer.js';
import { NOT_RETRYABLE, type JobSummary } from '../queue/job-facts.js';
import { cleanClaim, type Requester } from '../queue/requester.js';
import { scrubSecrets } from '../secrets.js';
import { bearerAuth } from './auth.js';
import { recoveryFacts, serverFacts } from './facts.js';
import { isRedisOutage, redisTrouble } from './redis-health.js';

/** An answer a route gives by throwing: its status, and its message as the body's `error`. */
class ApiAnswer extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function hasBody(req: Request): boolean {
  return Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
}

const query = (req: Request, name: string): string | undefined =>
  typeof req.query[name] === 'string' ? (req.query[name] as string) : undefined;

/** A job filter from the query: its words (JOB_FILTER_WORDS), `q` standing for `search`. */
function filterOf(req: Request): JobFilter {
  const words = Object.fromEntries(JOB_FILTER_WORDS.map((word) => [word, query(req, word)]));
  return parseJobFilter({ ...words, search: words.search ?? query(req, 'q') });
}

/** A job as the API shows it; `progress` is always `{percent, step}`. */
function jobView(summary: JobSummary) {
  return {
    id: summary.id,
    type: summary.type,
    reference: summary.reference,
    state: summary.state,
    progress: summary.progress,
    data: summary.data,
    result: summary.result,
    failedReason: summary.failedReason,
    attemptsMade: summary.attemptsMade,
    createdAt: summary.createdAt,
    startedAt: summary.startedAt,
    finishedAt: summary.finishedAt,
  };
}

/**
 * The HTTP API for applications: enqueue, validate, list, follow, cancel and retry jobs, read their
 * logs, list environments and backups. Payloads are validated with the same zod schemas (and
 * configuration checks) as the CLI's, the producer's and the worker's.
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

  const redisAway = (res: Response, why: string) =>
    res.status(503).json({ error: `dbops is up but its Redis does not answer: ${scrubSecrets(why, config.secrets)}` });
  /** Routes that read or write the queues answer 503 at once, with the reason, while Redis does not answer. */
  const redisUp: RequestHandler = async (_req, res, next) => {
    const trouble = await redisTrouble(producer.queues.connection);
    if (!trouble) return next();
    redisAway(res, trouble);
  };
  /** Who asked: the token's name, and whom the caller says it acts for (X-Dbops-On-Behalf-Of, as said). */
  const requesterOf = (req: Request): Requester => ({
    via: 'api',
    name: config.API_TOKEN_NAME,
    onBehalfOf: cleanClaim(req.get('X-Dbops-On-Behalf-Of')),
  });
  const knownType = (type: string): OperationType => {
    if (!isOperationType(type)) throw new ApiAnswer(404, `unknown operation type "${type}"`);
    return type;
  };
  /** The job a route names, by its type's queue; 404 when there is none. */
  const namedJob = async (req: Request) => {
    const type = knownType(String(req.params.type));
    const id = String(req.params.id);
    const job = await producer.getJob(formatJobReference(type, id));
    if (!job) throw new ApiAnswer(404, `no ${type} job "${id}"`);
    return job;
  };

  router.post('/jobs/:type', redisUp, async (req, res) => {
    const type = knownType(req.params.type as string);
    // An empty body is an empty payload; anything else is validated as it came, like every producer's.
    const job = await producer.enqueue(type, (hasBody(req) ? req.body : {}) as never, { requester: requesterOf(req) });
    res.status(202).json({ id: job.id, type, reference: formatJobReference(type, job.id) });
  });

  /** What a worker would answer to this payload, nothing enqueued: 200 with the payload as it would run, or 400. */
  router.post('/validate/:type', async (req, res) => {
    const type = knownType(req.params.type as string);
    const payload = await validatePayload(config, type, hasBody(req) ? req.body : {});
    res.json({ valid: true, type, payload });
  });

  router.get('/jobs', redisUp, async (req, res) => {
    res.json((await producer.list(filterOf(req))).map(jobView));
  });

  /** The job history: finished jobs kept beyond the queues, newest first (as `manage-db history --json`). */
  router.get('/history', redisUp, async (req, res) => {
    res.json(await producer.history.search(historyFilterOf(filterOf(req))));
  });

  router.get('/jobs/:type/:id', redisUp, async (req, res) => {
    res.json(jobView(await producer.summarize(await namedJob(req))));
  });

  router.get('/jobs/:type/:id/logs', redisUp, async (req, res) => {
    const job = await namedJob(req);
    const limit = Math.min(Math.max(Number(query(req, 'limit') ?? 1_000) || 1_000, 1), 10_000);
    const { logs, count } = await producer.queues.get(job.queueName as OperationType).getJobLogs(job.id!, -limit, -1);
    res.json({ id: job.id, count, lines: logs.map((line) => scrubSecrets(line, config.secrets)) });
  });

  router.post('/jobs/:type/:id/cancel', redisUp, async (req, res) => {
    const job = await namedJob(req);
    const outcome = await producer.cancelJob(job, requesterOf(req));
    if (outcome === 'finished') return res.status(409).json({ error: `${job.id} already finished: nothing to cancel` });
    res.json({ id: job.id, outcome });
  });

  router.post('/jobs/:type/:id/retry', redisUp, async (req, res) => {
    const job = await namedJob(req);
    const outcome = await producer.retryJob(job);
    if (outcome === 'not-failed')
      return res.status(409).json({
        error: `${job.id}: ${NOT_RETRYABLE}`,
      });
    res.status(202).json({ id: job.id, state: 'waiting' });
  });

  router.get('/environments', async (_req, res) => {
    const manifests = await BackupCatalogue.of(config)
      .list()
      .then((all): Manifest[] | string => all)
      .catch((error: unknown) => scrubSecrets(String((error as Error).message ?? error), config.secrets));
    const names = [...config.environments.keys()].sort();
    res.json(
      await Promise.all(
        names.map(async (name) => {
          const facts = await serverFacts(config, producer.queues.connection, name);
          const last = typeof manifests === 'string' ? undefined : manifests.filter((m) => m.env === name).at(-1);
          return {
            name,
            protected: config.protectedEnvs.has(name),
            reachable: facts.reachable,
            serverVersion: facts.reachable ? facts.version : null,
            sizeBytes: facts.reachable ? facts.sizeBytes : null,
            ...(facts.reachable ? {} : { reason: facts.reason }),
            lastBackup: last
              ? { id: last.id, completedAt: last.completedAt, sizeBytes: last.sizeBytes, database: last.database }
              : null,
            ...(typeof manifests === 'string' ? { backupsError: manifests } : {}),
          };
        }),
      ),
    );
  });

  router.get('/schemas', (_req, res) => {
    res.json(jobContract(config));
  });

  router.get('/schemas/:type', (req, res) => {
    res.json(operationContract(knownType(req.params.type as string), config));
  });

  /** A backup's archive as it is stored (encrypted ones stay encrypted), with its sha256 to check. */
  router.get('/backups/:id/archive', (req, res) =>
    sendArchive(res, BackupCatalogue.of(config), req.params.id, query(req, 'store'), (status, error) =>
      res.status(status).json({ error }),
    ),
  );

  // Point-in-time recovery: per server and store, the recoverable window, gaps, recovery point and the archiver's lag.
  router.get('/pitr', async (req, res) => {
    const env = query(req, 'env');
    res.json(
      await recoveryFacts(config, producer.queues.connection, {
        env: env ? normalizeEnvName(env) : undefined,
        store: query(req, 'store'),
      }),
    );
  });

  router.get('/backups', async (req, res) => {
    const env = query(req, 'env');
    res.json(
      (
        await BackupCatalogue.of(config).listWithStores({
          env: env ? normalizeEnvName(env) : undefined,
          store: query(req, 'store'),
        })
      ).map(({ manifest, stores }) => ({ ...manifest, heldBy: stores })),
    );
  });

  // The API's own answers to failures: a refused payload or query (400 naming the fields), Redis away
  // (503), anything with a status of its own; the rest goes on to the server's generic handler.
  const onError: ErrorRequestHandler = (error, req, res, next) => {
    if (error instanceof ValidationError)
      return res.status(400).json({
        ...(req.path.startsWith('/validate/') ? { valid: false } : {}),
        error: error.message,
        issues: error.issues,
      });
    if (isRedisOutage(error))
      return redisAway(res, lastConnectionError(producer.queues.connection)?.message ?? String(error.message));
    if (error instanceof ApiAnswer) return res.status(error.status).json({ error: error.message });
    next(error);
  };
  router.use(onError);
  return router;
}
