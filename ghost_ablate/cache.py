"""A small JSON cache in the user's cache folder, for figures that are slow to compute and
fixed for a given code version and machine: model costs, the CPU's bf16 speed probe.

Entries are keyed by the caller's key plus a fingerprint of the package's source, so an
edit to a model (or a new release) never serves a stale figure. Set GHOST_ABLATE_CACHE
to use another folder, or to an empty string to turn the cache off.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from . import __version__
from .formats import parse_json
from .records import write_json_atomic

ENV = "GHOST_ABLATE_CACHE"
PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path | None:
    """The cache folder, or None when GHOST_ABLATE_CACHE is set to an empty string."""
    value = os.environ.get(ENV)
    if value == "":
        return None
    return Path(value) if value else Path(user_cache_dir("ghost-ablate"))


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Package version plus a hash of every source file of the package."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


class JsonCache:
    """One JSON file of `key -> value` entries; unreadable files are treated as empty."""

    def __init__(self, name: str, folder: Path | None = None) -> None:
        folder = folder if folder is not None else cache_dir()  # read now: tests may point it elsewhere
        self.path = None if folder is None else folder / f"{name}.json"
        self._entries: dict[str, Any] | None = None

    @staticmethod
    def key(*parts: Any) -> str:
        return json.dumps([code_fingerprint(), *parts])

    @staticmethod
    def knob_parts(knobs: tuple[tuple[str, Any], ...]) -> list[Any]:
        """The key parts for a config's non-default knobs (`RunConfig.knobs`): none when all are
        defaults, so the keys of configs from before knobs existed stay as they were."""
        return [list(map(list, knobs))] if knobs else []

    def _load(self) -> dict[str, Any]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None and self.path.is_file():
                try:
                    loaded = parse_json(self.path.read_bytes(), self.path)
                    self._entries = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    pass  # a damaged cache is only a slower start
        return self._entries

    def get(self, key: str) -> Any:
        return self._load().get(key)

    def put(self, key: str, value: Any) -> None:
        entries = self._load()
        entries[key] = value
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, entries)
        except OSError:
            pass  # a read-only home folder costs speed, not results
