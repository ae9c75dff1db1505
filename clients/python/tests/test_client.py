"""The Python client against a real dbops server and real workers (run by tests/python-client.test.ts).

Environment: DBOPS_URL, DBOPS_API_TOKEN, and the test's environments: `app` (Pagila) and `target`
(protected: PROTECTED_ENVS=target).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dbops_client import Client, JobFailed, Unauthorized, ValidationFailed  # noqa: E402


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dbops = Client(timeout=30)
        job = cls.dbops.enqueue("backup", {"env": "app"})
        cls.backup = cls.dbops.wait(job, timeout=120, poll=0.2)

    def test_backup(self):
        self.assertRegex(self.backup["backupId"], r"^app-")
        self.assertEqual(len(self.backup["sha256"]), 64)
        ids = [manifest["id"] for manifest in self.dbops.backups("APP")]  # named as the CLI would
        self.assertIn(self.backup["backupId"], ids)

    def test_get(self):
        job = self.dbops.enqueue("maintenance", {"env": "app", "action": "report"})
        self.dbops.wait(job, timeout=120, poll=0.2)
        status = self.dbops.get(job)
        self.assertEqual(status["state"], "completed")
        self.assertEqual(status["result"]["action"], "report")

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

    def test_wrong_token(self):
        with self.assertRaises(Unauthorized):
            Client(token="not-the-token-at-all").backups()

    def test_failed_job(self):
        job = self.dbops.enqueue("maintenance", {"env": "app", "action": "vacuum", "table": "public.no_such_table"})
        with self.assertRaises(JobFailed) as caught:
            self.dbops.wait(job, timeout=120, poll=0.2)
        self.assertEqual(caught.exception.state, "failed")
        self.assertIn('no table "public.no_such_table"', caught.exception.reason)


if __name__ == "__main__":
    unittest.main()
