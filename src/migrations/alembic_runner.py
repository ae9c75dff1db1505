"""dbops' side of an Alembic or Flask-Migrate migration, run in the team's own Python (MIGRATE_PYTHON).

The migrate worker starts it with no shell: `python -I alembic_runner.py`, the request in the
environment variable DBOPS_MIGRATE_REQUEST (JSON), the database's URL in DATABASE_URL and
SQLALCHEMY_DATABASE_URI (never on a command line). It answers with lines on stdout:
  DBOPS-STEP {"revision": ..., "ms": ...}       a revision applied or reverted
  DBOPS-RESULT {...}                           the outcome (status, the SQL of a dry run)
  DBOPS-FAILED {"revision": ..., "error": ...}  a revision failed: rolled back, nothing after it ran
Everything else it or the team's env.py prints is log.
"""

import io
import json
import os
import sys
import time


def emit(kind, **data):
    sys.stdout.write("DBOPS-%s %s\n" % (kind, json.dumps(data)))
    sys.stdout.flush()


request = json.loads(os.environ["DBOPS_MIGRATE_REQUEST"])
url = os.environ["SQLALCHEMY_DATABASE_URI"]

import sqlalchemy  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402


def alembic_config():
    if request["kind"] == "flask":
        # As `flask db` does: the app (FLASK_APP) in its app context, Flask-Migrate's own configuration.
        from flask.cli import ScriptInfo

        app = ScriptInfo(app_import_path=os.environ.get("FLASK_APP")).load_app()
        app.app_context().push()
        migrate = app.extensions.get("migrate")
        if migrate is None:
            raise SystemExit("the Flask app (FLASK_APP) does not use Flask-Migrate: no Migrate(app, db)")
        return migrate.migrate.get_config(request["dir"])
    config = Config(os.path.join(request["dir"], "alembic.ini"))
    # The environment's URL, whatever alembic.ini says (ConfigParser: % doubled).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def current_heads():
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return list(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def pending(script, current, upper="heads"):
    """The revisions an upgrade to `upper` applies (every ancestor not applied yet, other branches' too), in order."""
    applied = {revision.revision for revision in script.iterate_revisions(tuple(current), "base")} if current else set()
    wanted = list(script.iterate_revisions(upper, "base"))
    return [revision.revision for revision in reversed(wanted) if revision.revision not in applied]


def main():
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    heads = list(script.get_heads())
    current = current_heads()
    action = request["action"]

    if action == "status":
        emit("RESULT", current=current, heads=heads, pending=pending(script, current))
        return

    if action == "up":
        target = request.get("target") or "heads"
        if target != "heads":
            script.get_revision(target)  # an unknown revision fails here, before anything runs
        chosen = pending(script, current, target)
        if request.get("count"):
            chosen = chosen[: request["count"]]
        if request.get("dryRun"):
            buffer = io.StringIO()
            config.output_buffer = buffer
            if chosen:
                start = current[0] if len(current) == 1 else None
                end = chosen[-1] if request.get("count") or target != "heads" else "heads"
                command.upgrade(config, "%s:%s" % (start, end) if start else end, sql=True)
            emit("RESULT", revisions=chosen, sql=buffer.getvalue())
            return
        for revision in chosen:
            started = time.monotonic()
            try:
                command.upgrade(config, revision)
            except BaseException as error:  # noqa: B902 - whatever the revision raised is the job's failure
                emit("FAILED", revision=revision, error=("%s: %s" % (type(error).__name__, error)).strip())
                sys.exit(3)
            emit("STEP", revision=revision, ms=round((time.monotonic() - started) * 1000))
        emit("RESULT", revisions=chosen)
        return

    if action == "down":
        count = request.get("count") or 1
        if len(current) > 1:
            raise SystemExit("the database is at several heads (%s): name what to downgrade" % ", ".join(current))
        chosen = []
        at = current[0] if current else None
        for _ in range(count):
            if at is None:
                break
            chosen.append(at)
            down = script.get_revision(at).down_revision
            if isinstance(down, tuple):
                if len(chosen) < count:
                    raise SystemExit("revision %s merges %s: downgrade it alone, then choose a branch" % (at, ", ".join(down)))
                down = down[0]
            at = down
        if request.get("dryRun"):
            buffer = io.StringIO()
            config.output_buffer = buffer
            if chosen:
                command.downgrade(config, "%s:%s" % (current[0], at or "base"), sql=True)
            emit("RESULT", revisions=chosen, sql=buffer.getvalue())
            return
        for revision in chosen:
            started = time.monotonic()
            try:
                command.downgrade(config, "-1")
            except BaseException as error:  # noqa: B902
                emit("FAILED", revision=revision, error=("%s: %s" % (type(error).__name__, error)).strip())
                sys.exit(3)
            emit("STEP", revision=revision, ms=round((time.monotonic() - started) * 1000))
        emit("RESULT", revisions=chosen)
        return

    raise SystemExit("unknown action %s" % action)


if __name__ == "__main__":
    main()
