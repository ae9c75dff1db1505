import express, { type Request, type RequestHandler, type Response } from 'express';
import { BackupCatalogue } from '../../backups/catalogue.js';
import type { Config } from '../../config.js';
import { ValidationError } from '../../errors.js';
import { getOperation, isOperationType } from '../../operations/index.js';
import type { JobSummary } from '../../queue/job-facts.js';
import type { Producer } from '../../queue/producer.js';
import type { Requester } from '../../queue/requester.js';
import { scrubSecrets } from '../../secrets.js';
import { factsCache, recoveryFacts, serverFacts } from '../facts.js';
import { type Html, html, page } from './html.js';

/*
 * What every page of the console shares: the configuration, the producer, how a page is sent, the
 * facts it shows (learnt through ../facts.ts) and the small pieces of markup several pages use.
 */

/** How long the console, open without credentials, shows a fact it learnt (a server's size, the stores' backups) before it asks again. */
const FACTS_TTL_MS = 10_000;

export interface ConsoleOptions {
  readOnly: boolean;
  guard: RequestHandler[];
  /** Dashboard credentials are configured (and so asked for). */
  authenticated: boolean;
}

export const param = (req: Request, name: string): string => String(req.params[name] ?? '');

export const jobHref = (summary: Pick<JobSummary, 'type' | 'id'>) =>
  `/jobs/${summary.type}/${encodeURIComponent(summary.id)}`;

export function stateCell(
  state: string,
  kind = state === 'completed' ? 'ok' : state === 'failed' || state === 'cancelled' ? 'bad' : 'muted',
): Html {
  return html`<span class="${kind}">${state}</span>`;
}

/** A result in words, as the CLI prints it (the operation's own describe), else its JSON. */
export function resultInWords(summary: JobSummary): string {
  if (summary.result === null || summary.result === undefined) return '';
  const operation = isOperationType(summary.type) ? getOperation(summary.type) : undefined;
  try {
    return operation?.describe ? operation.describe(summary.result as never) : JSON.stringify(summary.result, null, 2);
  } catch {
    return JSON.stringify(summary.result, null, 2);
  }
}

/** The console's shared means, made once per router. */
export function consoleContext(config: Config, producer: Producer, options: ConsoleOptions, router: express.Router) {
  // Each route behind the dashboard's guards (so that paths that are not the console's fall through to 404).
  const get = (path: string, handler: RequestHandler) => router.get(path, ...options.guard, handler);
  const post = (path: string, ...handlers: RequestHandler[]) => router.post(path, ...options.guard, ...handlers);
  const catalogue = () => BackupCatalogue.of(config);
  const send = (res: Response, title: string, current: string, body: Html, refreshSeconds?: number) =>
    res.type('html').send(page(title, current, body, { refreshSeconds, readOnly: options.readOnly }));
  const safe = (text: string) => scrubSecrets(text, config.secrets);
  /** Who the history says asked: the dashboard's one user, or nobody signed in (a console open on loopback). */
  const requester: Requester = { via: 'console', name: config.DASHBOARD_USER ?? 'nobody signed in' };
  const form = express.urlencoded({ extended: false, limit: '16kb' });
  /** An action: the job it enqueued is shown; an invalid one (a protected target without its name) is said, nothing enqueued. */
  const act =
    (title: string, enqueue: (req: Request) => Promise<{ type: string; id: string } | string>): RequestHandler =>
    async (req, res, next) => {
      try {
        const done = await enqueue(req);
        res.redirect(303, typeof done === 'string' ? done : jobHref(done as JobSummary));
      } catch (error) {
        if (!(error instanceof ValidationError)) return next(error);
        res.status(400);
        send(
          res,
          title,
          '',
          html`<p class="notice bad" role="alert">${safe(error.message)}</p>
            <p><a href="javascript:history.back()">Back</a></p>`,
        );
      }
    };

  // Behind credentials each page asks afresh; open to anyone on the host, it answers from what it learnt
  // in the last seconds (factsCache), so that no visitor makes it connect to every database per request.
  const factsTtl = options.authenticated ? 0 : FACTS_TTL_MS;
  /** A server's facts and the kept versions of its database. */
  const environmentFacts = factsCache(factsTtl, (name) => serverFacts(config, producer.queues.connection, name));
  const backupListing = factsCache(factsTtl, () => catalogue().listWithStores());
  /** Every server's PITR window: a listing of the stores (each WAL file's sidecar read), learnt as seldom. */
  const recoveryListing = factsCache(factsTtl, () => recoveryFacts(config, producer.queues.connection));
  return {
    config,
    producer,
    options,
    get,
    post,
    catalogue,
    send,
    safe,
    form,
    act,
    requester,
    environmentFacts,
    backupListing,
    recoveryListing,
  };
}

export type ConsoleContext = ReturnType<typeof consoleContext>;
