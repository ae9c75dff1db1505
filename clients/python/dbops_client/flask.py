"""A Flask extension: dbops configured from app.config, and a `flask dbops` command group.

    from dbops_client.flask import Dbops

    dbops = Dbops(app)            # or Dbops() and dbops.init_app(app) in an app factory
    dbops.client.enqueue("backup", {"env": "production"})

Configuration (app.config, else the process environment): DBOPS_URL, DBOPS_API_TOKEN, DBOPS_ENV (the
environment the commands act on unless given --env), DBOPS_TIMEOUT (seconds per request, default 10),
DBOPS_WAIT_TIMEOUT (seconds a command waits for its job, default: no limit).

Commands: `flask dbops backup | restore | status | jobs | environments | upgrade`. `upgrade` is the
migration guard around the app's own Flask-Migrate upgrade: a backup first, then dbops' lock on the
database while `flask db upgrade` runs, so that no dbops restore, copy or migrate interleaves.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, Dict, Optional, TypeVar, cast

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from .client import Client
from .errors import DbopsError

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULTS: Dict[str, Any] = {
    "DBOPS_URL": None,
    "DBOPS_API_TOKEN": None,
    "DBOPS_ENV": None,
    "DBOPS_TIMEOUT": 10.0,
    "DBOPS_WAIT_TIMEOUT": None,
}


class Dbops:
    """dbops for a Flask app: `client` for code, `flask dbops ...` for the shell and deploy scripts."""

    def __init__(self, app: Optional[Flask] = None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        for key, default in _DEFAULTS.items():
            app.config.setdefault(key, os.environ.get(key, default))
        app.extensions["dbops"] = self
        app.cli.add_command(dbops_cli)

    @property
    def client(self) -> Client:
        """A client configured from the current app's config."""
        config = current_app.config
        return Client(config["DBOPS_URL"], config["DBOPS_API_TOKEN"], timeout=float(config["DBOPS_TIMEOUT"]))

    def env(self, given: Optional[str] = None) -> str:
        """The environment to act on: the one given, else DBOPS_ENV."""
        env = given or current_app.config.get("DBOPS_ENV")
        if not env:
            raise click.UsageError("name the environment with --env, or set DBOPS_ENV")
        return str(env)

    def migration_guard(
        self, env: Optional[str] = None, database_url: Optional[str] = None, timeout: Optional[float] = None
    ) -> Any:
        """Client.migration_guard for this app: its environment, its SQLALCHEMY_DATABASE_URI."""
        url = database_url or current_app.config.get("SQLALCHEMY_DATABASE_URI") or os.environ.get("DATABASE_URL")
        if not url:
            raise click.UsageError("no database URL: set SQLALCHEMY_DATABASE_URI (or DATABASE_URL)")
        return self.client.migration_guard(self.env(env), str(url), timeout=timeout)


def _extension() -> Dbops:
    extension = current_app.extensions.get("dbops")
    if not isinstance(extension, Dbops):
        raise click.UsageError("dbops is not set up on this app: Dbops(app)")
    return extension


def _in_app_context(command: F) -> F:
    """Flask's with_appcontext, typed (Flask 2.2's is not)."""
    return cast(Callable[[F], F], with_appcontext)(command)


def _failing_cleanly(command: F) -> F:
    """A DbopsError ends the command with its one-line message (exit status 1), no traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DbopsError as error:
            raise click.ClickException(str(error)) from None

    return cast(F, run)


def _follow(job: str, wait: bool) -> Any:
    """Prints the job's reference; with `wait`, its progress (stderr) until it ends, and returns its result."""
    click.echo(job)
    if not wait:
        return None

    def show(progress: Dict[str, Any]) -> None:
        click.echo(f"{int(progress['percent']):3d}% {progress['step']}", err=True)

    timeout = current_app.config.get("DBOPS_WAIT_TIMEOUT")
    return _extension().client.wait(job, timeout=float(timeout) if timeout else None, on_progress=show)


dbops_cli = AppGroup("dbops", help="dbops: back up, restore and follow jobs of this app's databases.")


@click.command("backup")
@click.option("--env", help="the environment (default DBOPS_ENV)")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait for the backup to finish")
@_in_app_context
@_failing_cleanly
def backup_command(env: Optional[str], wait: bool) -> None:
    """Back the environment up; prints the job, then the backup's id."""
    dbops = _extension()
    result = _follow(dbops.client.enqueue("backup", {"env": dbops.env(env)}), wait)
    if result:
        click.echo(f"backup {result['backupId']} ({result['sizeBytes']} bytes, sha256 {result['sha256']})")


@click.command("restore")
@click.option("--env", help="the environment restored into (default DBOPS_ENV)")
@click.option("--backup", "backup_id", help="the backup's id")
@click.option("--latest", help="instead: the newest verified backup of this environment")
@click.option("--confirm", help="the environment's name again (a protected environment needs it)")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait for the restore to finish")
@_in_app_context
@_failing_cleanly
def restore_command(
    env: Optional[str], backup_id: Optional[str], latest: Optional[str], confirm: Optional[str], wait: bool
) -> None:
    """Restore a backup into the environment (through a shadow database, swapped in on success)."""
    dbops = _extension()
    payload: Dict[str, Any] = {"env": dbops.env(env)}
    for key, value in (("backup", backup_id), ("latest", latest), ("confirm", confirm)):
        if value:
            payload[key] = value
    result = _follow(dbops.client.enqueue("restore", payload), wait)
    if result:
        click.echo(f"restored {result['backupId']} into {payload['env']}")


@click.command("status")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="print the whole job as JSON")
@_in_app_context
@_failing_cleanly
def status_command(job: str, as_json: bool) -> None:
    """A job's state and progress; JOB is <type>/<id>."""
    status = _extension().client.get(job)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    progress = status.get("progress") or {"percent": 0, "step": ""}
    click.echo(f"{job}  {status['state']}  {int(progress['percent'])}% {progress['step']}".rstrip())
    if status.get("failedReason"):
        click.echo(f"reason: {status['failedReason']}")
    if status.get("result") is not None:
        click.echo(f"result: {json.dumps(status['result'])}")
    if status["state"] in ("failed", "cancelled"):
        sys.exit(1)


@click.command("jobs")
@click.option("--type", "kind", help="only this operation type")
@click.option("--env", help="only jobs on this environment")
@click.option("--state", help="only this state (completed, failed, cancelled, active, waiting, ...)")
@click.option("--since", help="queued since: 30m, 12h, 7d, or an ISO time")
@click.option("--search", help="only jobs whose id, payload, result or reason contain this")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@_in_app_context
@_failing_cleanly
def jobs_command(
    kind: Optional[str],
    env: Optional[str],
    state: Optional[str],
    since: Optional[str],
    search: Optional[str],
    limit: int,
    as_json: bool,
) -> None:
    """Recent jobs, newest first."""
    found = _extension().client.jobs(type=kind, env=env, state=state, since=since, search=search, limit=limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no jobs")
    for job in found:
        reason = (job.get("failedReason") or "").split("\n")[0]
        click.echo(f"{job['reference']}  {job['state']}  {int(job['progress']['percent'])}%  {job['createdAt']}  {reason}".rstrip())


@click.command("environments")
@_in_app_context
@_failing_cleanly
def environments_command() -> None:
    """The environments dbops knows: protected or not, reachable, last backup."""
    for env in _extension().client.environments():
        last = env.get("lastBackup") or {}
        state = f"PostgreSQL {env['serverVersion']}" if env["reachable"] else f"unreachable: {env.get('reason', '')}"
        protected = "protected" if env["protected"] else ""
        click.echo(f"{env['name']}  {protected}  {state}  last backup: {last.get('completedAt', 'none')}")


@click.command("upgrade")
@click.option("--env", help="the environment of this app's database (default DBOPS_ENV)")
@click.option("-d", "--directory", default=None, help="the Flask-Migrate folder (default: the app's)")
@click.option("--revision", default="head", show_default=True, help="the revision to upgrade to")
@_in_app_context
@_failing_cleanly
def upgrade_command(env: Optional[str], directory: Optional[str], revision: str) -> None:
    """`flask db upgrade` under dbops' guard: a backup first, and dbops' lock on the database meanwhile."""
    from flask_migrate import upgrade

    dbops = _extension()
    with dbops.migration_guard(env) as backup:
        click.echo(f"backup {backup['backupId']} taken; upgrading under dbops' lock", err=True)
        upgrade(directory=directory, revision=revision)
    click.echo(f"upgraded to {revision}; backup before it: {backup['backupId']}")


for _command in (
    backup_command,
    restore_command,
    status_command,
    jobs_command,
    environments_command,
    upgrade_command,
):
    dbops_cli.add_command(_command)

__all__ = ["Dbops", "dbops_cli"]



