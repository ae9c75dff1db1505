import express from 'express';
import type { Config } from '../../config.js';
import type { Producer } from '../../queue/producer.js';
import { consoleActions } from './actions.js';
import { backupsPage } from './backups-page.js';
import { consoleContext, type ConsoleOptions } from './context.js';
import { environmentsPage } from './environments-page.js';
import { historyPages } from './history-pages.js';
import { jobsPages } from './jobs-pages.js';
import { recoveryPage } from './recovery-page.js';
import { schedulesPage } from './schedules-page.js';

/*
 * The dbops console: environments, backups, schedules, jobs, their history and charts as pages a person reads, with the few
 * actions an operator takes (back up now, verify, restore, download, cancel, retry, drop a kept
 * version). Every action enqueues the same job the CLI would, through the same validation: a protected
 * environment needs its name typed, whoever asks. Mounted behind the dashboard's auth and guards.
 * One module per page; the facts they show come from ../facts.ts.
 */
export function consoleRouter(config: Config, producer: Producer, options: ConsoleOptions): express.Router {
  const router = express.Router();
  const context = consoleContext(config, producer, options, router);
  environmentsPage(context);
  backupsPage(context);
  recoveryPage(context);
  schedulesPage(context);
  jobsPages(context);
  historyPages(context);
  consoleActions(context);
  return router;
}
