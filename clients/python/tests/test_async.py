"""AsyncClient against the real dbops (run by tests/python-client.test.ts): the same calls, awaited."""

import asyncio
import unittest

from _support import assert_installed

from dbops_client import AsyncClient, Conflict, JobFailed, NotFound, ValidationFailed


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        assert_installed()
        self.dbops = AsyncClient(timeout=30)

    async def test_backup_with_an_async_progress_callback(self):
        seen = []

        async def report(progress):
            await asyncio.sleep(0)
            seen.append(progress["percent"])

        job = await self.dbops.enqueue("backup", {"env": "app"})
        result = await self.dbops.wait(job, timeout=120, poll=0.05, on_progress=report)
        self.assertRegex(result["backupId"], r"^app-")
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(seen[-1], 100)
        self.assertEqual((await self.dbops.get(job))["state"], "completed")
        self.assertIn(job, [found["reference"] for found in await self.dbops.jobs(type="backup")])
        self.assertTrue(await self.dbops.logs(job))
        self.assertIn(result["backupId"], [backup["id"] for backup in await self.dbops.backups("app")])
        with self.assertRaises(Conflict):
            await self.dbops.retry(job)
        for _ in range(100):  # the worker appends the job's history entry as it ends
            entries = await self.dbops.history(search=job.split("/", 1)[1])
            if entries:
                break
            await asyncio.sleep(0.1)
        self.assertEqual([(entry["reference"], entry["state"]) for entry in entries], [(job, "completed")])

    async def test_calls_run_concurrently(self):
        health, environments, schema = await asyncio.gather(
            self.dbops.health(), self.dbops.environments(), self.dbops.schema()
        )
        self.assertEqual(health, {"status": "ok"})
        self.assertEqual(sorted(env["name"] for env in environments), ["app", "flaskdb", "target"])
        self.assertIn("restore", [contract["type"] for contract in schema])

    async def test_validate_cancel_and_failures(self):
        self.assertEqual((await self.dbops.validate("backup", {"env": "app"}))["env"], "app")
        with self.assertRaises(ValidationFailed):
            await self.dbops.validate("backup", {"env": "app", "jobs": 4})
        waiting = await self.dbops.enqueue("copy", {"from": "app", "to": "target", "confirm": "target"})
        self.assertEqual(await self.dbops.cancel(waiting), "removed")
        with self.assertRaises(NotFound):
            await self.dbops.get(waiting)
        failing = await self.dbops.enqueue("maintenance", {"env": "app", "action": "analyze", "table": "public.nope"})
        with self.assertRaises(JobFailed):
            await self.dbops.wait(failing, timeout=120, poll=0.1)
        await self.dbops.retry(failing)
        with self.assertRaises(JobFailed):
            await self.dbops.wait(failing, timeout=120, poll=0.1)


if __name__ == "__main__":
    unittest.main()
