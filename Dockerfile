# dbops: build the TypeScript, then a slim runtime with the PostgreSQL client tools.
# Node.js 24 (Active LTS, what CI tests on). PG_MAJOR must be at least the major version of the servers dbops works on
# (pg_dump cannot dump a newer server); its client tools come from the PostgreSQL project's own apt
# repository (PGDG), which has every supported major, newest included.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src src
COPY workers workers
COPY dashboards dashboards
COPY bench bench
RUN npm run build && npm prune --omit=dev --ignore-scripts

FROM ${NODE_IMAGE} AS runtime
ARG PG_MAJOR=19
# Point-in-time recovery needs each archived server's own major (pg_basebackup, pg_receivewal, and the
# server binary that replays WAL in a private temporary instance): e.g. --build-arg PITR_MAJORS="16 17".
ARG PITR_MAJORS=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl util-linux \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
 && if [ -n "${PITR_MAJORS}" ]; then \
      install -d /etc/postgresql-common \
      && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
      && apt-get install -y --no-install-recommends $(for major in ${PITR_MAJORS}; do echo "postgresql-${major}"; done); \
    fi \
 && apt-get purge -y curl && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p -m 0700 /backups && chown node:node /backups && chmod 0700 /backups
WORKDIR /app
ENV NODE_ENV=production BACKUP_DIR=/backups MIGRATIONS_ROOT=/migrations PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY package.json ./
COPY bin bin
USER node
VOLUME ["/backups"]
EXPOSE 3000
# Default: every worker type plus the server (npm start). The compose file runs one process per service.
CMD ["node", "dist/workers/start-all.js"]
