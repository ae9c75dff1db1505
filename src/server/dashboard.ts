import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Router } from 'express';
import { getOperation, operationsOn, workerTypes } from '../operations/index.js';
import type { Queues } from '../queue/queues.js';

export const DASHBOARD_PATH = '/admin/queues';

/** Bull Board over every operation queue. */
export function dashboardRouter(queues: Queues, options: { readOnly: boolean }): Router {
  const serverAdapter = new ExpressAdapter().setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: workerTypes.map(
      (type) =>
        new BullMQAdapter(queues.get(type), {
          readOnlyMode: options.readOnly,
          allowRetries: !options.readOnly,
          description: [getOperation(type), ...operationsOn(type).filter((operation) => operation.type !== type)]
            .map((operation, index) => (index === 0 ? operation.summary : `${operation.type}: ${operation.summary}`))
            .join('; also '),
        }),
    ),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'dbops' } },
  });
  return serverAdapter.getRouter() as Router;
}
