"""Each error type provoked for real (run by tests/python-client.test.ts).

DBOPS_URL_STOPPED: a port nobody listens on; DBOPS_URL_NO_REDIS: a dbops server whose Redis is a closed
port; DBOPS_URL_NOT_JSON: a web server that answers an HTML page.
"""

import os
import time
import unittest

from _support import TOKEN, assert_installed

from dbops_client import (
    AsyncClient,
    BadResponse,
    Client,
    ConfigurationError,
    DbopsError,
    JobFailed,
    JobTimeout,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Unreachable,
    ValidationFailed,
)


class ErrorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert_installed()

    def assertDbopsError(self, kind, call):
        with self.assertRaises(kind) as caught:
            call()
        self.assertIsInstance(caught.exception, DbopsError)
        self.assertEqual(len(str(caught.exception).splitlines()), 1, str(caught.exception))
        return caught.exception

    def test_stopped_server(self):
        client = Client(os.environ["DBOPS_URL_STOPPED"], TOKEN, retries=2, backoff=0.05)
        error = self.assertDbopsError(Unreachable, client.environments)
        self.assertIn("connection refused", str(error))
        self.assertDbopsError(Unreachable, lambda: client.enqueue("backup", {"env": "app"}))

    def test_redis_down_behind_the_server(self):
        client = Client(os.environ["DBOPS_URL_NO_REDIS"], TOKEN)
        started = time.monotonic()
        error = self.assertDbopsError(ServiceUnavailable, lambda: client.enqueue("backup", {"env": "app"}))
        self.assertLess(time.monotonic() - started, client.timeout / 2)
        self.assertIn("Redis", str(error))
        self.assertDbopsError(ServiceUnavailable, lambda: client.get("backup/anything"))
        self.assertDbopsError(ServiceUnavailable, client.jobs)
        self.assertDbopsError(ServiceUnavailable, client.health)

    def test_not_json(self):
        client = Client(os.environ["DBOPS_URL_NOT_JSON"], TOKEN)
        error = self.assertDbopsError(BadResponse, client.environments)
        self.assertIn("not dbops' JSON", str(error))

    def test_wrong_token_and_not_found(self):
        self.assertDbopsError(Unauthorized, Client(token="wrong-token-wrong-token").environments)
        self.assertDbopsError(NotFound, lambda: Client().get("backup/no-such-job"))
        self.assertDbopsError(NotFound, lambda: Client().enqueue("explode", {}))

    def test_bad_payload(self):
        error = self.assertDbopsError(ValidationFailed, lambda: Client().enqueue("backup", {"env": "nowhere"}))
        self.assertIn("nowhere", str(error))

    def test_job_failed_and_timeout(self):
        client = Client()
        failing = client.enqueue("maintenance", {"env": "app", "action": "reindex", "table": "public.nothing_here"})
        self.assertDbopsError(JobFailed, lambda: client.wait(failing, timeout=120, poll=0.1))
        waiting = client.enqueue("copy", {"from": "app", "to": "target", "confirm": "target"})
        try:
            self.assertDbopsError(JobTimeout, lambda: client.wait(waiting, timeout=0.5, poll=0.1))
        finally:
            client.cancel(waiting)

    def test_url_without_scheme_fails_at_once(self):
        started = time.monotonic()
        self.assertDbopsError(ConfigurationError, lambda: Client("127.0.0.1:3000", TOKEN))
        self.assertDbopsError(ConfigurationError, lambda: AsyncClient("localhost", TOKEN))
        self.assertDbopsError(ConfigurationError, lambda: Client().get("no-slash"))
        self.assertLess(time.monotonic() - started, 1)


if __name__ == "__main__":
    unittest.main()
