"""The Flask extension through Flask's own CLI runner (run by tests/python-client.test.ts).

FLASK_DATABASE_URL is environment `flaskdb`'s database (empty); FLASK_MIGRATIONS the fixture app's
Flask-Migrate folder; FLASK_APP_DIR holds the fixture app (tests/fixtures/flask-app).
"""

import json
import os
import sys
import unittest

from _support import assert_installed

sys.path.insert(0, os.environ["FLASK_APP_DIR"])

import psycopg2  # noqa: E402
from app import create_app  # noqa: E402  (the fixture app: Flask-SQLAlchemy, Flask-Migrate)

from dbops_client import Client  # noqa: E402
from dbops_client.flask import Dbops  # noqa: E402


def make_app(**config):
    os.environ["DATABASE_URL"] = os.environ["FLASK_DATABASE_URL"]
    app = create_app()
    app.config.update({"DBOPS_ENV": "app", **config})
    Dbops(app)
    return app


class FlaskExtensionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert_installed()
        cls.app = make_app()
        cls.runner = cls.app.test_cli_runner()

    def invoke(self, *args):
        return self.runner.invoke(args=["dbops", *args])

    def test_configured_from_app_config(self):
        app = make_app(DBOPS_URL="http://127.0.0.1:1", DBOPS_API_TOKEN="x" * 20, DBOPS_TIMEOUT=2)
        with app.app_context():
            client = app.extensions["dbops"].client
            self.assertIsInstance(client, Client)
            self.assertEqual((client.url, client.token, client.timeout), ("http://127.0.0.1:1", "x" * 20, 2.0))

    def test_backup_status_and_jobs(self):
        result = self.invoke("backup")
        self.assertEqual(result.exit_code, 0, result.output)
        lines = result.stdout.strip().splitlines()
        job = lines[0]
        self.assertRegex(job, r"^backup/backup-")
        self.assertRegex(lines[-1], r"^backup app-\S+ \(\d+ bytes, sha256 [0-9a-f]{64}\)$")
        status = self.invoke("status", job)
        self.assertEqual(status.exit_code, 0, status.output)
        self.assertIn(f"{job}  completed  100%", status.output)
        as_json = json.loads(self.invoke("status", job, "--json").output)
        self.assertEqual(as_json["progress"]["percent"], 100)
        jobs = self.invoke("jobs", "--type", "backup", "--env", "app")
        self.assertEqual(jobs.exit_code, 0, jobs.output)
        self.assertIn(job, jobs.output)
        environments = self.invoke("environments")
        self.assertEqual(environments.exit_code, 0, environments.output)
        self.assertIn("target  protected", environments.output)

    def test_restore_needs_confirm_on_a_protected_environment(self):
        refused = self.invoke("restore", "--env", "target", "--latest", "app")
        self.assertEqual(refused.exit_code, 1)
        self.assertEqual(len(refused.output.strip().splitlines()), 1, refused.output)
        self.assertIn('"target" is a protected environment', refused.output)
        self.invoke("backup", "--env", "app")
        done = self.invoke("restore", "--env", "target", "--latest", "app", "--confirm", "target")
        self.assertEqual(done.exit_code, 0, done.output)
        self.assertIn("into target", done.output)

    def test_errors_are_one_line(self):
        app = make_app(DBOPS_API_TOKEN="wrong-token-wrong-token")
        result = app.test_cli_runner().invoke(args=["dbops", "jobs"])
        self.assertEqual(result.exit_code, 1)
        self.assertEqual(result.output.strip(), "Error: a valid bearer token is required")
        no_env = make_app(DBOPS_ENV=None).test_cli_runner().invoke(args=["dbops", "backup"])
        self.assertNotEqual(no_env.exit_code, 0)
        self.assertIn("--env", no_env.output)

    def test_upgrade_under_the_guard(self):
        app = make_app(DBOPS_ENV="flaskdb")
        result = app.test_cli_runner().invoke(
            args=["dbops", "upgrade", "--directory", os.environ["FLASK_MIGRATIONS"]]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertRegex(result.output, r"backup flaskdb-\S+ taken")
        connection = psycopg2.connect(os.environ["FLASK_DATABASE_URL"])
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('public.users') IS NOT NULL, to_regclass('public.posts') IS NOT NULL")
                self.assertEqual(cursor.fetchone(), (True, True))
        finally:
            connection.close()
        backups = [backup["env"] for backup in Client().backups("flaskdb")]
        self.assertEqual(backups, ["flaskdb"])


if __name__ == "__main__":
    unittest.main()
