"""One bounded reader of a file's bytes (`read_bounded`: a regular file inside its folder, of at
most a stated size) and one bounded parser per text format the project reads from files it did
not write: JSON (run records, shard manifests, side files of a results folder, caches) and YAML
(experiment and profile files). Each refuses, in one line naming the file, what would cost unbounded time or memory or
end in a traceback: nesting deeper than MAX_DEPTH, YAML aliases (a few lines of them expand to
billions of nodes when walked), files over their byte bound, and anything not parseable.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

MAX_DEPTH = 64  # our deepest file (a run record) nests 5 levels; a parser recursing 10,000 deep does not return
MAX_YAML_BYTES = 2 ** 20  # an experiment or profile file is a few KB


class FormatError(UserError, ValueError):
    """A file that is not well-formed, or not within the bounds, of its format; the message names it."""


def check_depth(value: Any, source: object, limit: int = MAX_DEPTH) -> Any:
    """`value` if its containers nest at most `limit` deep (checked without recursion), else FormatError."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > limit:
                raise FormatError(f"{source}: refused, nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))
    return value


def parse_json(data: bytes | str, source: object) -> Any:
    """JSON text as Python values, or FormatError naming `source`."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise FormatError(f"{source}: refused, nested deeper than the JSON parser can follow") from None
    except UnicodeDecodeError as err:
        raise FormatError(f"{source}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:
        raise FormatError(f"{source}: not JSON ({str(err).splitlines()[0]})") from None
    return check_depth(value, source)


MAX_RECORD_BYTES = 16 * 2 ** 20  # a 400-epoch record is ~200 KB; anything far larger is not one of ours


class UnsafeFile(UserError):
    """A file the project was asked to read that is not a regular file inside its folder."""


def read_bounded(path: Path, root: Path, limit: int = MAX_RECORD_BYTES) -> bytes | None:
    """The bytes of `path`, read only if it is a regular file inside `root` once links are resolved,
    and at most `limit` bytes long; None if it does not exist. A FIFO, device or directory is refused
    without blocking (opened non-blocking, checked with fstat before reading); so is a link pointing
    outside `root`."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    real, inside = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real != inside and inside not in real.parents:
        raise UnsafeFile(f"{path}: refused, it links outside {root}")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None  # a dangling link
        raise UnsafeFile(f"{path}: cannot open ({err.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: refused, not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(f"{path}: refused, {st.st_size:,} bytes is over the {limit:,}-byte bound")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"{path}: refused, over the {limit:,}-byte bound")
    return data


def read_json_bounded(path: Path, root: Path, limit: int = MAX_RECORD_BYTES) -> Any:
    """JSON from `read_bounded`; None if missing, unsafe or unparsable (for optional side files)."""
    try:
        data = read_bounded(path, root, limit)
        return None if data is None else parse_json(data, path)
    except (UnsafeFile, ValueError):
        return None


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: no file of ours uses them, and a few lines of nested
    aliases make a document whose walk is exponential."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - PyYAML's node types
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not accepted, line {mark.line + 1}")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path, limit: int = MAX_YAML_BYTES) -> Any:
    """A YAML file's value: a regular file of at most `limit` bytes, no aliases, at most MAX_DEPTH
    deep; FormatError naming the file otherwise (OSError where it cannot be read at all)."""
    path = Path(path)
    try:
        data = read_bounded(path, Path(os.path.realpath(path)).parent, limit)
    except UnsafeFile as err:
        raise FormatError(str(err)) from None
    if data is None:
        raise FormatError(f"{path}: no such file")
    try:
        value = yaml.load(data, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise FormatError(f"{path}: refused, nested deeper than the YAML parser can follow") from None
    except yaml.YAMLError as err:
        raise FormatError(f"{path}: malformed YAML ({' '.join(str(err).split())[:300]})") from None
    return check_depth(value, path)
