"""What the tests share: where dbops is (set by tests/python-client.test.ts) and the installed package."""

import os
import sysconfig

import dbops_client

URL = os.environ["DBOPS_URL"]
TOKEN = os.environ["DBOPS_API_TOKEN"]


def assert_installed() -> None:
    """The tests run the package as pip installed it into the virtual environment, not this checkout."""
    installed = os.path.realpath(sysconfig.get_paths()["purelib"])
    here = os.path.realpath(dbops_client.__file__)
    if not here.startswith(installed + os.sep):
        raise AssertionError(f"dbops_client was imported from {here}, not from the environment's {installed}")
