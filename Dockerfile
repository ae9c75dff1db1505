# dbops: build the TypeScript, then a slim runtime with the PostgreSQL client tools.
# PG_MAJOR should be at least the major version of the servers dbops works on (pg_dump cannot dump a
# newer server). Debian bookworm ships postgresql-client-15; for other majors add the PGDG repository
# (https://wiki.postgresql.org/wiki/Apt) before installing postgresql-client-${PG_MAJOR}.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src src
COPY workers workers
COPY dashboards dashboards
COPY bench bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

FROM ${NODE_IMAGE} AS runtime
ARG PG_MAJOR=15
RUN apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p -m 0700 /backups && chown node:node /backups && chmod 0700 /backups
WORKDIR /app
ENV NODE_ENV=production BACKUP_DIR=/backups PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY package.json ./
COPY bin bin
USER node
VOLUME ["/backups"]
EXPOSE 3000
# Default: every worker type plus the server (npm start). The compose file runs one process per service.
CMD ["node", "dist/workers/start-all.js"]
