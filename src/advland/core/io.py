"""Atomic outputs and safe checkpoints.

Every output is written to a temporary file beside it and renamed into place only
when all outputs of a step are complete, so a crash (or kill -9) never leaves a
half-written file that looks like a result.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from advland.core.errors import CheckpointError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_outputs(*paths: Path) -> Iterator[tuple[Path, ...]]:
    """Yield temporary paths; on success rename them onto `paths`, else delete them."""
    paths = tuple(Path(p) for p in paths)
    tmps = []
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.close(fd)
        tmps.append(Path(tmp))
    try:
        yield tuple(tmps)
        for tmp, p in zip(tmps, paths, strict=True):
            os.replace(tmp, p)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole,
    else it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(paths: Iterable[Path]) -> None:
    """Delete the `.<name>.*.tmp` files and folders that a killed earlier attempt left
    beside each of `paths` (atomic_outputs and atomic_dir make them there)."""
    for path in map(Path, paths):
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()


def check_writable(paths: Iterable[Path]) -> None:  # placeholder until helper A's version
    for path in map(Path, paths):
        path.parent.mkdir(parents=True, exist_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_outputs(path) as (tmp,):
        tmp.write_text(text)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, frame) -> None:
    with atomic_outputs(path) as (tmp,):
        frame.to_csv(tmp, index=False)


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save of plain tensors, numbers, strings, lists and dicts only."""
    with atomic_outputs(path) as (tmp,):
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True: a tampered pickle is refused, not run."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or unsafe checkpoint ({first})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not an advland checkpoint (no state_dict)")
    return payload
