"""A PEP 517 build backend for dbops-client, standard library only.

The package is pure Python with no dependencies; this backend builds its wheel (and sdist) without
setuptools, so that `pip install ./clients/python` needs no package index. It reads the name, version,
summary and Python requirement from pyproject.toml and packs `dbops_client/`.
"""

import base64
import hashlib
import io
import os
import tarfile
import zipfile

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - older Pythons read the few keys below by hand
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "dbops_client"


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        text = handle.read()
    if tomllib is not None:
        return tomllib.loads(text.decode("utf-8"))["project"]
    project, section = {}, None
    for line in text.decode("utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[project]" and "=" in line and line.split("=", 1)[1].strip().startswith('"'):
            key, value = (part.strip() for part in line.split("=", 1))
            project[key] = value.strip('"')
    return project


def _dist_name(project):
    return project["name"].replace("-", "_")


def _metadata(project):
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.9')}",
        "License: MIT",
        "Provides-Extra: flask",
        'Requires-Dist: flask>=2.2; extra == "flask"',
        "Provides-Extra: lock",
        'Requires-Dist: psycopg2; extra == "lock"',
        "Description-Content-Type: text/markdown",
        "",
    ]
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return "\n".join(lines) + "\n" + handle.read()


def _package_files():
    base = os.path.join(ROOT, PACKAGE)
    for directory, subdirectories, files in os.walk(base):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".typed")):
                full = os.path.join(directory, name)
                yield full, os.path.relpath(full, ROOT).replace(os.sep, "/")


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{name},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def _wheel(wheel_directory, editable):
    project = _project()
    dist = f"{_dist_name(project)}-{project['version']}"
    wheel_name = f"{dist}-py3-none-any.whl"
    info = f"{dist}.dist-info"
    entries = []
    if editable:
        entries.append((f"{PACKAGE}.pth", (ROOT + "\n").encode("utf-8")))
    else:
        for full, name in _package_files():
            with open(full, "rb") as handle:
                entries.append((name, handle.read()))
    entries.append((f"{info}/METADATA", _metadata(project).encode("utf-8")))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: dbops_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = [_record_line(name, data) for name, data in entries] + [f"{info}/RECORD,,"]
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return wheel_name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None):
    project = _project()
    dist = f"{_dist_name(project)}-{project['version']}"
    name = f"{dist}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as archive:
        for relative in ["pyproject.toml", "README.md", "_build/dbops_build.py"]:
            archive.add(os.path.join(ROOT, relative), arcname=f"{dist}/{relative}")
        for full, relative in _package_files():
            archive.add(full, arcname=f"{dist}/{relative}")
        info = tarfile.TarInfo(f"{dist}/PKG-INFO")
        data = _metadata(project).encode("utf-8")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return name
