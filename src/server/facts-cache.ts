/**
 * Facts the server shows that cost a connection or a listing to learn (a database's size, a store's
 * manifests): learnt at most once per `ttlMs` for each key, however many requests ask meanwhile, so
 * that nobody (an unauthenticated visitor of the console least of all) can make the server open a
 * connection to every database per request. A failure is remembered as long, as what there is to show.
 */
export function factsCache<T>(ttlMs: number, learn: (key: string) => Promise<T>): (key: string) => Promise<T> {
  const known = new Map<string, { value: Promise<T>; until: number }>();
  return (key) => {
    const now = Date.now();
    const entry = known.get(key);
    if (entry && entry.until > now) return entry.value;
    const value = learn(key);
    known.set(key, { value, until: now + ttlMs });
    return value;
  };
}
