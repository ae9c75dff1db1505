import os from 'node:os';
import type { RequestHandler } from 'express';
import { isLoopbackHost, type Config } from '../config.js';

/*
 * What every request passes before any route: the Host it names (DNS rebinding), and for the dashboard
 * whether it may change anything at all (read-only without credentials) and whether it comes from the
 * dashboard's own pages (a cross-site form or fetch carrying cached basic-auth credentials).
 */

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);

function bareHost(host: string): string | undefined {
  try {
    return new URL(`http://${host}`).hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  } catch {
    return undefined;
  }
}

/**
 * The host names this server answers to: its HOST (or, listening on every address, this machine's
 * name and addresses), the loopback names, and ALLOWED_HOSTS.
 */
export function allowedHostNames(config: Pick<Config, 'HOST' | 'allowedHosts'>): Set<string> {
  const names = new Set([
    'localhost',
    '127.0.0.1',
    '::1',
    ...config.allowedHosts.map((host) => bareHost(host) ?? host),
  ]);
  if (WILDCARD_HOSTS.has(config.HOST)) {
    names.add(os.hostname().toLowerCase());
    for (const addresses of Object.values(os.networkInterfaces()))
      for (const address of addresses ?? []) names.add(address.address.toLowerCase());
  } else {
    names.add(bareHost(config.HOST) ?? config.HOST.toLowerCase());
  }
  return names;
}

/** Refuses (421) a request whose Host header names another server: a rebound DNS name is not us. */
export function hostGuard(config: Pick<Config, 'HOST' | 'allowedHosts'>): RequestHandler {
  const allowed = allowedHostNames(config);
  return (req, res, next) => {
    const host = bareHost(req.headers.host ?? '');
    if (host !== undefined && (allowed.has(host) || (isLoopbackHost(host) && isLoopbackHost(config.HOST))))
      return next();
    res
      .status(421)
      .json({ error: `this server does not answer to host "${req.headers.host ?? ''}" (see ALLOWED_HOSTS)` });
  };
}

/** Without dashboard credentials (or with DASHBOARD_READONLY), nothing but reading. */
export function readOnlyGuard(): RequestHandler {
  return (req, res, next) => {
    if (SAFE_METHODS.has(req.method)) return next();
    res.set('Allow', 'GET, HEAD').status(405).json({
      error: 'the dashboard is read-only: set DASHBOARD_USER and DASHBOARD_PASSWORD to change queues from it',
    });
  };
}

/**
 * A change is accepted only from the dashboard's own pages: its Origin (or, without one, its Referer)
 * must be this very host. Browsers send Origin with every cross-site POST, which no page can forge.
 */
export function sameOriginGuard(): RequestHandler {
  return (req, res, next) => {
    if (SAFE_METHODS.has(req.method)) return next();
    const source = req.headers.origin ?? req.headers.referer;
    let sourceHost: string | undefined;
    try {
      sourceHost = source && source !== 'null' ? new URL(source).host : undefined;
    } catch {
      sourceHost = undefined;
    }
    if (sourceHost !== undefined && sourceHost === req.headers.host) return next();
    res
      .status(403)
      .json({ error: "refused: a change must come from the dashboard's own pages (Origin or Referer of this host)" });
  };
}
