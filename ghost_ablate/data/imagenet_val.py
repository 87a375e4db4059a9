"""The official ILSVRC-2012 validation images come as one flat folder; `sort_val` moves them
into class folders once, from whichever ground-truth file the user has."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .common import DataError
from .imagenet_layout import WNID, is_image, wnids


def read_ground_truth(path: str | Path, devkit: str | Path | None = None) -> dict[str, str]:
    """Image file name -> wnid, from one of the ground-truth files users have:
    - the devkit's ILSVRC2012_validation_ground_truth.txt (one class number per line, for
      ILSVRC2012_val_00000001.JPEG onwards), with `devkit` (its folder, or data/meta.mat) to
      map the numbers to wnids;
    - a table with one image and its wnid per row: Kaggle's LOC_val_solution.csv (ImageId,
      PredictionString starting with the wnid) or lines of `file wnid`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such ground-truth file")
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as text ({type(err).__name__})") from None
    if not lines:
        raise DataError(f"{path}: empty; a ground-truth file has one row per validation image")
    if all(ln.isdigit() for ln in lines):
        if devkit is None:
            raise DataError(f"{path}: holds class numbers; give the devkit (--devkit, its folder or meta.mat) to map "
                            f"them to wnids")
        numbers = _devkit_wnids(Path(devkit))
        try:
            return {f"ILSVRC2012_val_{i:08d}.JPEG": numbers[int(n)] for i, n in enumerate(lines, 1)}
        except KeyError as err:
            raise DataError(f"{path}: class number {err} is not in the devkit's meta.mat") from None
    table: dict[str, str] = {}
    for row in csv.reader(lines) if "," in lines[0] else (ln.split() for ln in lines):
        if len(row) < 2 or row[0] == "ImageId":
            continue
        name, wnid = row[0], row[1].split()[0]
        table[name if is_image(name) else f"{name}.JPEG"] = wnid
    if not table or not all(WNID.match(w) for w in table.values()):
        raise DataError(f"{path}: not a ground-truth file (expected rows of `file wnid`, Kaggle's "
                        f"LOC_val_solution.csv, or the devkit's class numbers)")
    return table


def _devkit_wnids(devkit: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid from the devkit's meta.mat (read with scipy: data, never code)."""
    from scipy.io import loadmat  # lazy: an optional or rarely used dependency, loaded on use

    meta = devkit if devkit.suffix == ".mat" else devkit / "data" / "meta.mat"
    if not meta.is_file():
        raise DataError(f"{meta}: no such file; give the ILSVRC2012 devkit folder or its data/meta.mat")
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except NotImplementedError:  # scipy reads MATLAB files up to v7.2
        raise DataError(f"{meta}: a MATLAB v7.3 file, which scipy cannot read; the devkit's meta.mat is v5 "
                        f"(re-download the ILSVRC2012 devkit)") from None
    except Exception as err:  # noqa: BLE001 - scipy raises many kinds on a truncated or foreign file
        raise DataError(f"{meta}: not the devkit's meta.mat ({type(err).__name__})") from None


def plan_val_moves(val: Path, table: dict[str, str], source: str = "the ground truth"
                   ) -> tuple[list[tuple[Path, Path]], int]:
    """Every move `sort_val` would make, checked before any is made: (source, target) pairs of the
    flat images and how many are in place already. A DataError names the first problem: a name
    that is not a plain file name of `val/`, an image missing from the ground truth, a class
    folder that is a link or not a folder, or a target that exists already."""
    for name in table:
        if Path(name).name != name or name in (".", "..") or "/" in name or "\\" in name:
            raise DataError(f"ground truth names {name[:80]!r}, not a file name inside {val}; nothing was moved")
    flat = sorted(e.name for e in os.scandir(val) if e.is_file(follow_symlinks=False) and is_image(e.name))
    strays = [n for n in flat if n not in table]
    if strays:
        raise DataError(f"{val / strays[0]}: not in {source} ({len(strays)} such images); nothing was moved")
    moves = []
    for name in flat:
        folder = val / table[name]
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise DataError(f"{folder}: a link or a file where a class folder goes; nothing was moved")
        target = folder / name
        if target.exists() or target.is_symlink():
            raise DataError(f"{target}: exists already beside {val / name}; nothing was moved")
        moves.append((val / name, target))
    placed = sum(1 for n, w in table.items() if not (val / w).is_symlink() and (val / w / n).is_file()
                 and not (val / w / n).is_symlink())
    return moves, placed


def sort_val(val_dir: str | Path, ground_truth: str | Path, devkit: str | Path | None = None) -> tuple[int, int]:
    """Move the flat official val/ images into val/<wnid>/ folders; return (moved, already in place).
    Every move is checked before the first is made (`plan_val_moves`), and running it again moves
    nothing."""
    val = Path(val_dir)
    if not val.is_dir():
        raise DataError(f"{val}: no such folder")
    table = read_ground_truth(ground_truth, devkit)
    known = set(wnids())
    unknown = sorted({w for w in table.values() if w not in known})
    if unknown:
        raise DataError(f"{ground_truth}: {unknown[0][:80]!r} is not an ILSVRC-2012 class")
    moves, placed = plan_val_moves(val, table, str(ground_truth))
    for folder in sorted({target.parent for _, target in moves}):
        folder.mkdir(exist_ok=True)
    for source, target in moves:
        os.replace(source, target)
    return len(moves), placed


