import type { Config } from '../config.js';
import { normalizeEnvName } from '../config.js';
import { ValidationError } from '../errors.js';

/** A database named by its environment. `url` holds the password and never leaves the process. */
export interface DatabaseTarget {
  env: string;
  database: string;
  url: string;
}

export function databaseOf(url: string): string {
  const parsed = new URL(url);
  const fromPath = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  return fromPath || parsed.searchParams.get('dbname') || decodeURIComponent(parsed.username) || 'postgres';
}

/** The environment a payload names; `field` is the payload field that names it, for the error. */
export function resolveTarget(config: Config, envName: string, field = 'env'): DatabaseTarget {
  const name = normalizeEnvName(envName);
  const environment = config.environments.get(name);
  if (!environment) {
    const known = [...config.environments.keys()].join(', ') || 'none configured';
    throw new ValidationError(
      `unknown environment "${envName}" (known: ${known}; set DATABASE_URL_${name.toUpperCase().replace(/-/g, '_')})`,
      [{ path: field, message: 'unknown environment' }],
    );
  }
  return { env: environment.name, database: databaseOf(environment.url), url: environment.url };
}

/** The same server and credentials, another database. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  parsed.searchParams.delete('dbname');
  return parsed.toString();
}

/**
 * How to point libpq tools at a database without a password on their command line (where `ps` would
 * show it): the URL without credentials goes in --dbname, the password in PGPASSWORD.
 */
export function libpqConnection(url: string): { dbname: string; env: Record<string, string> } {
  const parsed = new URL(url);
  const password = decodeURIComponent(parsed.password) || parsed.searchParams.get('password') || '';
  parsed.password = '';
  // Rebuilt by hand: URLSearchParams would write a space as '+', which libpq reads as a '+'
  // (`options=-c%20DateStyle%3DISO` must stay as it is).
  const query = [...parsed.searchParams]
    .filter(([key]) => key !== 'password')
    .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`)
    .join('&');
  parsed.search = query ? `?${query}` : '';
  const env: Record<string, string> = {};
  if (password) env.PGPASSWORD = password;
  return { dbname: parsed.toString(), env };
}
