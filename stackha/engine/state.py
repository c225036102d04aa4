"""What the engine records: the deployment, its units' workload states, and generated secrets.

The state store is one SQLite file per deployment (``<state_dir>/deployments/<name>/state.db``).
Secrets are files of their own, mode 0600 in 0700 directories
(``<state_dir>/deployments/<name>/secrets/<app>/<key>``), so a state dump or a log never contains
one; nothing in stackha prints them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from stackha.services.base import generate_secret

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    unit TEXT PRIMARY KEY, app TEXT NOT NULL, host TEXT NOT NULL,
    state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    ts REAL NOT NULL, app TEXT NOT NULL, what TEXT NOT NULL
);
"""


@dataclass
class UnitRecord:
    """A unit as recorded: the host it runs on and its last workload state and message."""

    unit: str
    app: str
    host: str
    state: str
    message: str
    updated: float


class StateStore:
    """The SQLite state of one deployment.

    ``meta`` holds the bundle (as loaded and dumped), overlays, lab prefix and tuning; ``units``
    the last known workload state per unit; ``events`` what each deploy changed.
    """

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        # One connection shared by the engine's recovery threads: sqlite3 serialises the calls,
        # and every write below is a single autocommit statement.
        self.db = sqlite3.connect(self.dir / "state.db", timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------- meta
    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ----------------------------------------------------------------- units
    def set_unit(self, unit: str, app: str, host: str, state: str, message: str = "") -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO units (unit, app, host, state, message, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (unit, app, host, state, message, time.time()),
        )

    def unit(self, unit: str) -> UnitRecord | None:
        row = self.db.execute("SELECT unit, app, host, state, message, updated FROM units WHERE unit = ?",
                              (unit,)).fetchone()
        return UnitRecord(*row) if row else None

    def units(self) -> list[UnitRecord]:
        rows = self.db.execute("SELECT unit, app, host, state, message, updated FROM units ORDER BY app, unit")
        return [UnitRecord(*r) for r in rows]

    def delete_unit(self, unit: str) -> None:
        self.db.execute("DELETE FROM units WHERE unit = ?", (unit,))

    # ----------------------------------------------------------------- events
    def event(self, app: str, what: str) -> None:
        self.db.execute("INSERT INTO events (ts, app, what) VALUES (?, ?, ?)", (time.time(), app, what))

    def events(self) -> Iterator[tuple[float, str, str]]:
        yield from self.db.execute("SELECT ts, app, what FROM events ORDER BY ts")


class FileSecrets:
    """Secrets of one application, each a 0600 file in a 0700 directory; generated on first use.

    Implements :class:`stackha.services.base.Secrets`.
    """

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def _path(self, name: str) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"secret name {name!r}: letters, digits, '-' and '_' only")
        return self.dir / name

    def read(self, name: str) -> str | None:
        try:
            return self._path(name).read_text()
        except FileNotFoundError:
            return None

    def put(self, name: str, value: str) -> None:
        path = self._path(name)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        tmp = path.with_name(f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, path)

    def get(self, name: str, *, length: int = 32) -> str:
        path = self._path(name)
        value = self.read(name)
        if value is not None:
            return value
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        value = generate_secret(length)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another process
            return path.read_text()
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value
