/** The real services the tests use (started by .ci/run where they are not running). */
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export function pgUrl(database: string, password?: string): string {
  const url = new URL(PG_ADMIN_URL);
  if (password) url.password = password;
  url.pathname = `/${database}`;
  return url.toString();
}
