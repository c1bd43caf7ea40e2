"""MLflow in a virtualenv of its own (bench/.venv-mlflow), installed from the pinned requirements and
installed again only when they change."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_PINNED_MLFLOW = re.compile(r"^mlflow==(\S+)$", re.MULTILINE)
# The requirements the virtualenv was last installed from, kept inside it.
_INSTALLED_REQUIREMENTS = "flywheel-bench-requirements.txt"


def pinned_version(requirements: Path) -> str:
    match = _PINNED_MLFLOW.search(requirements.read_text())
    if match is None:
        raise ValueError(f"{requirements} does not pin mlflow (a line `mlflow==<version>`)")
    return match.group(1)


def installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    completed = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True
    )
    return completed.stdout.strip() if completed.returncode == 0 else None


def ensure_mlflow(venv: Path, requirements: Path) -> str:
    """The installed MLflow version; installs the requirements first when the virtualenv was not
    installed from exactly these."""
    wanted = pinned_version(requirements)
    stamp = venv / _INSTALLED_REQUIREMENTS
    pins = requirements.read_text()
    if installed_version(venv) == wanted and stamp.exists() and stamp.read_text() == pins:
        return wanted
    print(f"installing mlflow {wanted} into {venv} (a few minutes the first time)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True
    )
    found = installed_version(venv)
    if found != wanted:
        raise RuntimeError(f"{venv} has mlflow {found} after installing {requirements}, not {wanted}")
    stamp.write_text(pins)
    return wanted
