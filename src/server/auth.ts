import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';

/** Constant-time comparison whatever the lengths (both sides are hashed to the same size first). */
export function safeEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

/** HTTP basic auth for the dashboard, its JSON API and /metrics. */
export function basicAuth(user: string, password: string): RequestHandler {
  return (req, res, next) => {
    const header = req.headers.authorization ?? '';
    const match = /^Basic\s+(.+)$/i.exec(header);
    if (match?.[1]) {
      const decoded = Buffer.from(match[1], 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const okUser = safeEqual(decoded.slice(0, Math.max(colon, 0)), user);
      const okPassword = safeEqual(decoded.slice(colon + 1), password);
      if (colon >= 0 && okUser && okPassword) return next();
    }
    res
      .set('WWW-Authenticate', 'Basic realm="dbops", charset="UTF-8"')
      .status(401)
      .json({ error: 'authentication required' });
  };
}

/** `Authorization: Bearer <API_TOKEN>` for the HTTP API. */
export function bearerAuth(token: string): RequestHandler {
  return (req, res, next) => {
    const match = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (match?.[1] && safeEqual(match[1].trim(), token)) return next();
    res.set('WWW-Authenticate', 'Bearer realm="dbops"').status(401).json({ error: 'a valid bearer token is required' });
  };
}
