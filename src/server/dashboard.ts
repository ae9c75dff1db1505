import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Router } from 'express';
import { getOperation, isOperationType, operationsOn, queueOf, workerTypes } from '../operations/index.js';
import type { Queues } from '../queue/queues.js';

export const DASHBOARD_PATH = '/admin/queues';

/** Bull Board over every operation queue. */
export function dashboardRouter(queues: Queues, options: { readOnly: boolean }): Router {
  const serverAdapter = new ExpressAdapter().setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: workerTypes.map((type) => {
      const adapter = new BullMQAdapter(queues.get(type), {
        readOnlyMode: options.readOnly,
        allowRetries: !options.readOnly,
        description: [getOperation(type), ...operationsOn(type).filter((operation) => operation.type !== type)]
          .map((operation, index) => (index === 0 ? operation.summary : `${operation.type}: ${operation.summary}`))
          .join('; also '),
        // Each job's page in the dbops console: result in words, the log lines that matter.
        externalJobUrl: (job) => ({
          displayText: 'in the dbops console',
          // Named as the console names it: a job on another operation's queue is its queue's.
          href: `/jobs/${isOperationType(job.name) && queueOf(job.name) === type ? job.name : type}/${encodeURIComponent(String(job.id))}`,
        }),
      });
      // dbops' progress is {percent, step}: Bull Board draws a bar for a number only.
      adapter.setFormatter('progress', (progress: unknown) =>
        progress && typeof progress === 'object' && 'percent' in progress
          ? Math.round(Number((progress as { percent: number }).percent))
          : progress,
      );
      return adapter;
    }),
    serverAdapter,
    // Back to the console, from every page of the board.
    options: { uiConfig: { boardTitle: 'dbops', miscLinks: [{ text: 'dbops console', url: '/' }] } },
  });
  return serverAdapter.getRouter() as Router;
}
