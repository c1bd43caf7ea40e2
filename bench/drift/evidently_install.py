"""Evidently in a virtualenv of its own (bench/.venv-evidently), installed from the pinned requirements and
installed again only when they change; our process never imports it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_PINNED_EVIDENTLY = re.compile(r"^evidently==(\S+)$", re.MULTILINE)
# The requirements the virtualenv was last installed from, kept inside it.
_INSTALLED_REQUIREMENTS = "flywheel-bench-requirements.txt"


def ensure_evidently(venv: Path, requirements: Path) -> Path:
    """The virtualenv's Python, with exactly the pinned Evidently; installs the requirements first when the
    virtualenv was not installed from these."""
    match = _PINNED_EVIDENTLY.search(requirements.read_text())
    if match is None:
        raise ValueError(f"{requirements} does not pin evidently (a line `evidently==<version>`)")
    wanted, python, stamp = match.group(1), venv / "bin" / "python", venv / _INSTALLED_REQUIREMENTS
    pins = requirements.read_text()
    if _installed_version(python) == wanted and stamp.exists() and stamp.read_text() == pins:
        return python
    print(f"installing evidently {wanted} into {venv} (a minute or two the first time)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
    found = _installed_version(python)
    if found != wanted:
        raise RuntimeError(f"{venv} has evidently {found} after installing {requirements}, not {wanted}")
    stamp.write_text(pins)
    return python


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    completed = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('evidently'))"],
        capture_output=True,
        text=True,
    )
    return completed.stdout.strip() if completed.returncode == 0 else None
