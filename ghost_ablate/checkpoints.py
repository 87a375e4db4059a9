"""Checkpoints: written atomically (`AtomicCheckpointIO`), chosen for a resume
(`resumable_checkpoint`), and read without running code.

Every checkpoint or state_dict the project reads (a run's own `last.ckpt` on resume, a
results folder `report` or `doctor` looks at, a `--weights` file from anywhere) goes
through `safe_load`: `torch.load(weights_only=True)`, which admits tensors and plain
Python values and refuses any other global before it is imported. What cannot load is
told apart by cause: the file is damaged (broken archive), unsafe (holds objects), or the
environment failed (I/O, memory, a torch that cannot read it), which says nothing about
the file and so must never get it moved aside.
"""
from __future__ import annotations

import logging
import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import UserError
from .records import set_aside, storage_guard

log = logging.getLogger(__name__)
CHECKPOINT = "last.ckpt"
PREVIOUS_CHECKPOINT = "previous.ckpt"  # the checkpoint before last.ckpt, kept in case last.ckpt is damaged


class CheckpointUnreadable(UserError):
    """A checkpoint that is intact on disk could not be read for a reason outside the file (an I/O
    error, memory, a torch that cannot read it): the run stops and nothing is moved."""


def safe_load(path: Path, inside: Path | None = None) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU: tensors and plain Python types only.

    Raises UnsafeCheckpoint when the file is no regular file (a FIFO would block the reader, a
    device never ends), or, with `inside` (a run folder), is a link or lies outside it, and when
    it holds anything but tensors and plain values (code, classes); DamagedCheckpoint when its
    archive is broken, CheckpointUnreadable for errors of the environment."""
    path = Path(path)
    if inside is not None and (path.is_symlink() or Path(os.path.realpath(path)).parent != Path(
            os.path.realpath(inside))):
        raise UnsafeCheckpoint(f"{path}: refused: a checkpoint in a run folder is a regular file of that folder, "
                               f"not a link")
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as err:
        raise CheckpointUnreadable(f"{path}: could not be read ({err.strerror})") from None
    if not regular:
        raise UnsafeCheckpoint(f"{path}: refused: not a regular file")
    problem = archive_problem(path)
    if problem:
        raise DamagedCheckpoint(f"{path}: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:  # a truncated legacy-format file
        raise DamagedCheckpoint(f"{path}: cannot be loaded (truncated)") from None
    except pickle.UnpicklingError as err:  # what weights_only raises for any global it does not admit
        raise UnsafeCheckpoint(f"{path}: cannot be loaded safely: it holds objects other than tensors and plain values "
                               f"({str(err).splitlines()[0][:120]}); refused without running them") from None
    except (OSError, MemoryError) as err:
        raise CheckpointUnreadable(f"{path}: could not be read ({type(err).__name__}: {err}); nothing was "
                                   f"moved, fix the cause and run the same command again") from None
    except Exception as err:  # an intact archive torch cannot read: a torch too old or too new
        raise CheckpointUnreadable(f"{path}: this torch ({torch.__version__}) cannot read it ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0][:160] if str(err) else ''}); nothing was moved"
                                   ) from None


class DamagedCheckpoint(UserError):
    """The checkpoint file itself is broken (truncated, zero bytes, CRC error)."""


class UnsafeCheckpoint(DamagedCheckpoint):
    """The checkpoint holds more than tensors and plain values (possibly code)."""


def archive_problem(path: Path) -> str | None:
    """None if `path` looks like a whole torch file (a zip archive whose members read back with
    correct CRCs, or a legacy pickle-format file), else why not. torch's own reader fails on a
    broken archive with a RuntimeError that cannot be told apart from other failures."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:1] == b"\x80":  # torch's legacy (pre-1.6) format: torch.load decides
            return None
        if not head.startswith(b"PK"):
            return "cannot be loaded (" + ("neither a torch archive nor a legacy torch file)" if head else "empty file)")
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as err:
        return f"cannot be loaded (truncated or not an archive: {type(err).__name__})"
    except OSError as err:
        raise CheckpointUnreadable(f"{path}: could not be read ({type(err).__name__}: {err}); nothing was "
                                   f"moved") from None
    return None if bad is None else f"cannot be loaded (CRC error in {bad})"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file and rename, so a kill never leaves a truncated last.ckpt;
    the checkpoint it replaces becomes previous.ckpt. A full disk or read-only folder raises
    StorageError and leaves both earlier checkpoints as they were. Reading is always
    `weights_only=True`: tensors and plain types, never code.

    A checkpoint of Lightning's own requeue handler (`hpc_ckpt_N.ckpt`) would become last.ckpt, so a
    requeued job resumes the way every other restart does; that handler is off here (`preemption`
    saves at a step's end instead), so only a Lightning set up by hand writes one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        if path.name.startswith("hpc_ckpt_"):
            path = path.with_name(CHECKPOINT)
        tmp = path.with_name(f".{path.name}.tmp")
        with storage_guard(path, cleanup=tmp):
            super().save_checkpoint(checkpoint, tmp, storage_options)
            if path.exists():
                os.replace(path, path.with_name(PREVIOUS_CHECKPOINT))
            os.replace(tmp, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return safe_load(Path(path))


def checkpoint_problem(path: Path, expected: dict[str, Any]) -> str | None:
    """Why the checkpoint at `path` cannot resume this run (damaged, unsafe, or of another
    configuration), or None if it can. `expected` holds the run's config (`run_config`,
    seed and data included) and the module's `hyper_parameters`; checkpoints older than the
    stored run config are checked on their hyper-parameters alone. Errors of the environment
    raise CheckpointUnreadable instead: they say nothing about the file."""
    try:
        ckpt = safe_load(path, inside=path.parent)
    except DamagedCheckpoint as err:
        return str(err).removeprefix(f"{path}: ")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint"
    for key, want in expected.items():
        saved = ckpt.get(key)
        if saved is not None and dict(saved) != want:
            return "holds another configuration"
    return None


def resumable_checkpoint(out: Path, expected: dict[str, Any]) -> tuple[Path | None, list[str]]:
    """last.ckpt, else previous.ckpt, whichever can resume this run; unusable ones are moved aside
    (never deleted). Under DDP rank 0 alone calls it (`distributed.Ranks.decide`). Returns the
    checkpoint (None: start over) and one note per unusable file."""
    notes = []
    for path in (out / CHECKPOINT, out / PREVIOUS_CHECKPOINT):
        if not path.exists():
            continue
        problem = checkpoint_problem(path, expected)
        if problem is None:
            return path, notes
        aside = set_aside(path)
        notes.append(f"{path} {problem}; moved to {aside.name}")
        log.warning("warning: %s", notes[-1])
    if notes:
        notes.append("no loadable checkpoint: the run started over")
        log.warning("warning: %s: %s", out, notes[-1])
    return None, notes
