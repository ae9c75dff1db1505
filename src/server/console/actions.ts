import { ValidationError } from '../../errors.js';
import { NOT_RETRYABLE } from '../../queue/job-facts.js';
import { type ConsoleContext, param } from './context.js';

/** Actions: mutating routes, behind the dashboard's guards (405 read-only, same-origin with credentials). */
export function consoleActions(context: ConsoleContext): void {
  const { producer, post, form, act, requester } = context;
  const asked = { requester };
  // Actions: mutating routes, behind the dashboard's guards (405 read-only, same-origin with credentials).
  post(
    '/environments/:env/backup',
    form,
    act(
      'Back up',
      (req) => producer.enqueue('backup', { env: param(req, 'env') }, asked) as Promise<{ type: string; id: string }>,
    ),
  );
  post(
    '/environments/:env/previous/:name/drop',
    form,
    act('Drop a kept version', (req) =>
      producer.enqueue(
        'previous',
        {
          env: param(req, 'env'),
          action: 'drop',
          name: param(req, 'name'),
          confirm: (req.body as Record<string, string>).confirm || undefined,
        },
        asked,
      ),
    ),
  );
  post(
    '/backups/:id/verify',
    form,
    act('Verify', (req) =>
      producer.enqueue(
        'verify',
        { backup: param(req, 'id'), full: (req.body as Record<string, string>).full === '1' },
        asked,
      ),
    ),
  );
  post(
    '/backups/:id/restore',
    form,
    act('Restore', (req) => {
      const body = req.body as Record<string, string>;
      return producer.enqueue(
        'restore',
        { env: body.env ?? '', backup: param(req, 'id'), confirm: body.confirm || undefined },
        asked,
      );
    }),
  );
  post(
    '/jobs/:type/:id/cancel',
    act('Cancel', async (req) => {
      await producer.cancel(`${param(req, 'type')}/${param(req, 'id')}`, requester);
      return `/jobs/${param(req, 'type')}/${encodeURIComponent(param(req, 'id'))}`;
    }),
  );
  post(
    '/jobs/:type/:id/retry',
    act('Retry', async (req) => {
      const outcome = await producer.retry(`${param(req, 'type')}/${param(req, 'id')}`);
      if (outcome === 'not-failed') throw new ValidationError(NOT_RETRYABLE);
      return `/jobs/${param(req, 'type')}/${encodeURIComponent(param(req, 'id'))}`;
    }),
  );
}
