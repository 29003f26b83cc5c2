"""Data files shipped inside PyPI packages: fetched with ``pip download --no-deps``, checked by sha256.

Only the data file is taken out of the wheel; the package itself is never installed. Files of
packages that the project installs anyway (pymatgen, ase) are read in place, and checked the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class PackageDataError(RuntimeError):
    """A package data file could not be obtained or does not have the expected content."""


@dataclass(frozen=True)
class PackageFile:
    """A file inside a pinned PyPI package.

    installed: the package is a dependency of the project, so the file is read from site-packages.
    """

    package: str
    version: str
    member: str  # path inside the wheel / package root, e.g. "larixite/amcsd_cif1.db"
    sha256: str
    installed: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate(spec: PackageFile, *, cache_dir: Path, python: str = "") -> Path:
    """Path of a verified copy of ``spec``'s file, downloading its wheel once when needed."""
    if spec.installed:
        path = _installed_path(spec)
    else:
        path = cache_dir / "files" / f"{spec.package}-{spec.version}" / spec.member
        if not path.exists():
            _extract_from_wheel(spec, path, python=python or sys.executable, wheel_dir=cache_dir / "wheels")
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise PackageDataError(
            f"{path}: sha256 {actual} does not match the pinned {spec.sha256} of {spec.requirement}; "
            f"install the pinned version (pip install -r requirements.txt) or delete the file to fetch it again")
    return path


def _installed_path(spec: PackageFile) -> Path:
    top = spec.member.split("/", 1)[0]
    found = importlib.util.find_spec(top)
    if found is None or not found.submodule_search_locations:
        raise PackageDataError(f"package {spec.requirement} is not installed: pip install -r requirements.txt")
    root = Path(list(found.submodule_search_locations)[0]).parent
    path = root / spec.member
    if not path.exists():
        raise PackageDataError(f"{spec.requirement}: {spec.member} is missing from the installed package")
    return path


def _extract_from_wheel(spec: PackageFile, target: Path, *, python: str, wheel_dir: Path) -> None:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = _find_wheel(spec, wheel_dir)
    if not wheels:
        command = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--dest", str(wheel_dir), spec.requirement]
        print(f"Fetching {spec.requirement} from the package index for {spec.member} ...", file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = _find_wheel(spec, wheel_dir)
        if result.returncode != 0 or not wheels:
            raise PackageDataError(f"pip download {spec.requirement} failed: {result.stderr.strip()[-2000:]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            data = wheel.read(spec.member)
        except KeyError:
            raise PackageDataError(f"{wheels[0].name} has no member {spec.member}") from None
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(tmp, target)


def _find_wheel(spec: PackageFile, wheel_dir: Path) -> list[Path]:
    stem = spec.package.replace("-", "_").lower()
    return sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(f"{stem}-{spec.version}-"))
