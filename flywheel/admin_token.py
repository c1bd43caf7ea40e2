"""The admin token of a platform started here (`flywheel up`), where the SDK and the CLI find it."""

from __future__ import annotations

import os

from shared.auth import ADMIN_TOKEN_FILE, new_token
from shared.settings import FlywheelSettings


def local_admin_token(settings: FlywheelSettings) -> tuple[str, bool]:
    """The first admin token to give the registry, and whether it is new: FLYWHEEL_ADMIN_TOKEN, else
    FLYWHEEL_DATA_DIR/admin-token, else a new one saved there (readable by this user only). The registry
    takes it only at its first start, when it has no token yet."""
    if configured := settings.admin_token.get_secret_value():
        return configured, False
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), False
    token = new_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token, True


def announce_admin_token(settings: FlywheelSettings, token: str) -> None:
    print(
        f"The first admin token, shown this once (kept in {settings.data_dir / ADMIN_TOKEN_FILE}, where the "
        f"SDK and the CLI find it): {token}"
    )
