"""Atomic outputs, byte-deterministic checkpoints and the one safe `.pt` loader.

Every output is written to a temporary file beside it and renamed into place only
when all outputs of a step are complete, so a crash (or kill -9) never leaves a
half-written file that looks like a result. A full, read-only or forbidden output
location is an `OutputError` naming the output; `check_writable` finds it before work.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from advland.core.errors import CheckpointError, OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)

# A location that cannot take the output: full, over quota, read-only or forbidden.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})


def _cannot_write(paths: Sequence[Path], err: OSError) -> OutputError:
    where = ", ".join(str(p) for p in paths)
    return OutputError(f"{where}: cannot write ({err.strerror or err})")


@contextlib.contextmanager
def output_errors(paths: Sequence[Path], own: Sequence[Path] | None = None) -> Iterator[None]:
    """An OSError of OUTPUT_ERRNOS becomes a one-line OutputError naming `paths`. With
    `own`, only for errors of an unnamed file (a failed write) or of a path in `own`: an
    input that the body reads keeps its own error."""
    try:
        yield
    except OSError as err:
        mine = own is None or err.filename is None or _within(err.filename, own)
        if err.errno not in OUTPUT_ERRNOS or not mine:
            raise
        raise _cannot_write(paths, err) from None


def _within(filename: str | bytes | int, folders: Sequence[Path]) -> bool:
    if not isinstance(filename, str):
        return False
    path = Path(filename).absolute()
    return any(path.is_relative_to(Path(f).absolute()) for f in folders)


def check_writable(paths: Iterable[Path]) -> None:
    """Before any work: the folder each output will be written in takes a new file, else a
    one-line OutputError names the output. A missing folder is probed at its nearest
    existing ancestor (nothing is created). Creating and removing a file is the only true
    test (root ignores permission bits)."""
    checked: set[Path] = set()
    for path in map(Path, paths):
        folder = path.absolute().parent
        while not folder.exists():
            folder = folder.parent
        if folder in checked:
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise _cannot_write([path], err) from None
        checked.add(folder)


@contextlib.contextmanager
def atomic_outputs(*paths: Path) -> Iterator[tuple[Path, ...]]:
    """Yield temporary paths; on success rename them onto `paths`, else delete them."""
    paths = tuple(Path(p) for p in paths)
    tmps: list[Path] = []
    try:
        with output_errors(paths):
            for p in paths:
                p.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
                tmps.append(Path(tmp))
                os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
                os.close(fd)
        with output_errors(paths, own=tmps):
            yield tuple(tmps)
        for tmp, p in zip(tmps, paths, strict=True):
            with output_errors([p]):
                os.replace(tmp, p)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole,
    else it is deleted."""
    path = Path(path)
    with output_errors([path]):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with output_errors([path], own=[tmp]):
            os.chmod(tmp, 0o777 & ~_UMASK)
            try:
                yield tmp
            except OutputError as err:  # of a file in the folder: name its final place
                raise OutputError(str(err).replace(str(tmp), str(path))) from None
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


def write_text(path: Path, text: str) -> None:
    with atomic_outputs(path) as (tmp,):
        tmp.write_text(text)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, frame) -> None:
    with atomic_outputs(path) as (tmp,):
        frame.to_csv(tmp, index=False)


def pt_bytes(payload) -> bytes:
    """torch.save into memory: saved to a path, the archive's inner folder is named after
    the (temporary) file, so the same tensors would give new bytes every time."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, payload: dict) -> None:
    """Plain tensors, numbers, strings, lists and dicts only; the same payload gives the
    same bytes."""
    data = pt_bytes(payload)
    with atomic_outputs(path) as (tmp,):
        tmp.write_bytes(data)


def load_pt(path: Path, what: str = "checkpoint"):
    """torch.load(weights_only=True, map_location='cpu'): the one way the project reads a
    `.pt` file. A missing, truncated or malformed file, or one holding anything but
    tensors and plain values (a pickle that would run code), is a one-line
    CheckpointError naming the file; nothing in it is run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives only
        raise CheckpointError(f"{path}: corrupt or unsafe {what} (truncated or not a zip archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to parse an untrusted file is the file's fault
        raise CheckpointError(f"{path}: corrupt or unsafe {what} ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """What went wrong, in one line, without torch's advice to load with weights_only=False."""
    text = str(err)
    if found := re.search(r"GLOBAL ([\w.]+)", text):
        return f"refused: it would import {found[1]}; only tensors and plain values load"
    if "weights_only" in text or "Weights only" in text:
        return "refused: it holds more than tensors and plain values"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def load_checkpoint(path: Path) -> dict:
    """A model checkpoint through `load_pt`: a mapping with a state_dict."""
    payload = load_pt(path)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not an advland checkpoint (no state_dict)")
    return payload
