"""The client against a real dbops server and real workers (run by tests/python-client.test.ts).

Environments: `app` (Pagila) and `target` (protected: PROTECTED_ENVS=target). No copy worker runs, so a
copy job stays waiting. DBOPS_NUMERIC_WAITING and DBOPS_NUMERIC_FAILING name jobs another BullMQ producer
added with numeric ids (a copy that waits, a maintenance job that fails).
"""

import os
import time
import unittest

from _support import assert_installed

from dbops_client import Client, Conflict, DbopsError, JobFailed, NotFound, Unauthorized, ValidationFailed


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert_installed()
        cls.dbops = Client(timeout=30)
        cls.progress = []
        job = cls.dbops.enqueue("backup", {"env": "app"})
        cls.backup_job = job
        cls.backup = cls.dbops.wait(job, timeout=120, poll=0.05, on_progress=cls.progress.append)

    def test_backup_and_its_progress(self):
        self.assertRegex(self.backup["backupId"], r"^app-")
        self.assertEqual(len(self.backup["sha256"]), 64)
        ids = [manifest["id"] for manifest in self.dbops.backups("APP")]  # named as the CLI would
        self.assertIn(self.backup["backupId"], ids)
        percents = [report["percent"] for report in self.progress]
        self.assertGreaterEqual(len(percents), 3, self.progress)
        self.assertEqual(percents, sorted(percents), self.progress)
        self.assertEqual(percents[-1], 100)
        self.assertTrue(all(set(report) == {"percent", "step"} for report in self.progress))
        self.assertTrue(any(report["step"] for report in self.progress))

    def test_get_shape(self):
        status = self.dbops.get(self.backup_job)
        self.assertEqual(status["state"], "completed")
        self.assertEqual(status["progress"]["percent"], 100)
        self.assertEqual(status["reference"], self.backup_job)
        waiting = self.dbops.enqueue("copy", {"from": "app", "to": "target", "confirm": "target"})
        try:
            self.assertEqual(self.dbops.get(waiting)["progress"], {"percent": 0, "step": ""})
        finally:
            self.dbops.cancel(waiting)

    def test_restore_with_confirm(self):
        job = self.dbops.enqueue("restore", {"env": "target", "backup": self.backup["backupId"], "confirm": "target"})
        result = self.dbops.wait(job, timeout=120, poll=0.2)
        self.assertEqual(result["backupId"], self.backup["backupId"])
        self.assertEqual(result["env"], "target")

    def test_protected_without_confirm(self):
        with self.assertRaises(ValidationFailed) as caught:
            self.dbops.enqueue("restore", {"env": "target", "backup": self.backup["backupId"]})
        self.assertEqual(caught.exception.issues, [{"path": "confirm", "message": 'must equal "target"'}])
        self.assertIn('the field "confirm"', str(caught.exception))

    def test_invalid_payload(self):
        with self.assertRaises(ValidationFailed) as caught:
            self.dbops.enqueue("backup", {"env": "app", "format": "zip", "colour": "red"})
        self.assertEqual(sorted(issue["path"] for issue in caught.exception.issues), ["colour", "format"])

    def test_validate(self):
        self.assertEqual(self.dbops.validate("backup", {"env": "APP"}), {"env": "app", "format": "custom", "jobs": 1, "allDatabases": False, "digests": False})
        with self.assertRaises(ValidationFailed) as caught:
            self.dbops.validate("restore", {"env": "app"})
        self.assertEqual(caught.exception.issues, [{"path": "backup", "message": "name a backup, or latest (one of them)"}])
        with self.assertRaises(ValidationFailed):
            self.dbops.validate("migrate", {"env": "app", "backupFirst": True, "dryRun": True})
        before = [job["reference"] for job in self.dbops.jobs(limit=1000)]
        self.dbops.validate("backup", {"env": "app"})
        self.assertEqual([job["reference"] for job in self.dbops.jobs(limit=1000)], before)

    def test_wrong_token(self):
        with self.assertRaises(Unauthorized):
            Client(token="not-the-token-at-all").backups()

    def test_failed_job_its_log_and_retry(self):
        job = self.dbops.enqueue("maintenance", {"env": "app", "action": "vacuum", "table": "public.no_such_table"})
        with self.assertRaises(JobFailed) as caught:
            self.dbops.wait(job, timeout=120, poll=0.2)
        self.assertEqual(caught.exception.state, "failed")
        self.assertIn('no table "public.no_such_table"', caught.exception.reason)
        self.dbops.retry(job)
        with self.assertRaises(JobFailed):
            self.dbops.wait(job, timeout=120, poll=0.2)
        self.assertGreaterEqual(self.dbops.get(job)["attemptsMade"], 1)
        with self.assertRaises(Conflict):
            self.dbops.retry(self.backup_job)  # a completed job never runs again

    def test_logs(self):
        lines = self.dbops.logs(self.backup_job)
        self.assertTrue(lines, "a backup logs what it did")
        self.assertTrue(all(isinstance(line, str) for line in lines))
        self.assertEqual(len(self.dbops.logs(self.backup_job, limit=1)), 1)
        with self.assertRaises(NotFound):
            self.dbops.logs("backup/no-such-job")

    def test_jobs_filters(self):
        backups = self.dbops.jobs(type="backup", env="app", state="completed")
        self.assertIn(self.backup_job, [job["reference"] for job in backups])
        self.assertTrue(all(job["type"] == "backup" and job["state"] == "completed" for job in backups))
        found = self.dbops.jobs(search=self.backup["backupId"])
        self.assertEqual([job["reference"] for job in found], [self.backup_job])
        self.assertEqual(self.dbops.jobs(type="backup", since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z"), [])
        self.assertIn(self.backup_job, [job["reference"] for job in self.dbops.jobs(since="1h")])
        self.assertEqual(self.dbops.jobs(env="target", type="backup"), [])
        with self.assertRaises(ValidationFailed):
            self.dbops.jobs(state="sleeping")

    def test_history_says_whom_the_token_acts_for(self):
        for_alice = Client(timeout=30, on_behalf_of="alice@example.com")
        job = for_alice.enqueue("maintenance", {"env": "app", "action": "analyze"})
        for_alice.wait(job, timeout=120, poll=0.1)
        job_id = job.split("/", 1)[1]
        entries = []
        for _ in range(100):  # the worker appends the entry as the job ends
            entries = for_alice.history(search=job_id)
            if entries:
                break
            time.sleep(0.1)
        self.assertEqual([entry["reference"] for entry in entries], [job])
        self.assertEqual(entries[0]["state"], "completed")
        self.assertEqual(entries[0]["requestedBy"], 'API token "api" for "alice@example.com"')
        self.assertIn(job, [entry["reference"] for entry in self.dbops.history(type="maintenance", env="app", since="1h")])
        with self.assertRaises(ValidationFailed):
            self.dbops.history(state="active")

    def test_cancel(self):
        waiting = self.dbops.enqueue("copy", {"from": "app", "to": "target", "confirm": "target"})
        self.assertEqual(self.dbops.cancel(waiting), "removed")
        with self.assertRaises(NotFound):
            self.dbops.get(waiting)
        with self.assertRaises(Conflict):
            self.dbops.cancel(self.backup_job)

    def test_environments_health_schema(self):
        environments = {env["name"]: env for env in self.dbops.environments()}
        self.assertEqual(sorted(environments), ["app", "flaskdb", "target"])
        self.assertFalse(environments["app"]["protected"])
        self.assertTrue(environments["target"]["protected"])
        self.assertTrue(environments["app"]["reachable"])
        self.assertRegex(environments["app"]["serverVersion"], r"^\d+")
        self.assertIsNotNone(environments["app"]["lastBackup"])
        self.assertEqual(self.dbops.health(), {"status": "ok"})
        schema = self.dbops.schema("restore")
        self.assertEqual(schema["progress"]["required"], ["percent", "step"])
        self.assertTrue(schema["examples"])

    def test_a_numeric_job_of_another_producer(self):
        waiting = os.environ["DBOPS_NUMERIC_WAITING"]
        failing = os.environ["DBOPS_NUMERIC_FAILING"]
        self.assertIn(waiting, [job["reference"] for job in self.dbops.jobs(type="copy", state="waiting")])
        self.assertEqual(self.dbops.get(waiting)["progress"], {"percent": 0, "step": ""})
        with self.assertRaises(JobFailed):
            self.dbops.wait(failing, timeout=120, poll=0.2)
        self.dbops.retry(failing)
        with self.assertRaises(JobFailed):
            self.dbops.wait(failing, timeout=120, poll=0.2)
        self.assertTrue(self.dbops.logs(failing) is not None)
        self.assertEqual(self.dbops.cancel(waiting), "removed")

    def test_every_error_is_a_dbops_error(self):
        import dbops_client

        for name in dbops_client.__all__:
            value = getattr(dbops_client, name)
            if isinstance(value, type) and issubclass(value, Exception):
                self.assertTrue(issubclass(value, DbopsError), name)


if __name__ == "__main__":
    unittest.main()
