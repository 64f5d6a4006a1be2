"""Writing files and folders so that nothing is ever half written or silently clobbered."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from umaf.errors import UmafError

#: Weights file of every trained UMAF component folder (extractor, generator, interpolator, gate).
WEIGHTS_NAME = "model.safetensors"


def slug(name: str) -> str:
    """A file or folder name for a model or capability name (``zoo:llama-m-a`` -> ``zoo-llama-m-a``)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    return text or "unnamed"


def is_trained(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds a trained component's weights."""
    return (Path(folder) / WEIGHTS_NAME).is_file()


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail with a clear message if ``path`` exists and ``overwrite`` is off."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UmafError(f"{path} exists; pass --overwrite to replace it")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; it replaces ``path`` only if the block succeeds.

    Works for single files and for whole folders (``is_dir=True``, e.g. a PEFT adapter directory). The
    old version is deleted only once the new one is in its place (see :func:`_swap_in`).
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _default_permissions(tmp)
        _swap_in(tmp, path)
    finally:
        _remove(tmp)


def _swap_in(new: Path, path: Path) -> None:
    """Move ``new`` to ``path``. Over nothing, or a file over a file, that is one atomic rename; anything
    over a folder (which a rename cannot replace) moves the old one aside first, renames the new one in,
    then deletes the old one, and puts the old one back if the swap fails."""
    if not path.exists() or (not path.is_dir() and not new.is_dir()):
        os.replace(new, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    try:
        os.replace(path, aside / path.name)
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(aside / path.name, path)
            raise
    finally:
        _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _default_permissions(path: Path) -> None:
    """Temporary files and folders are created private (0600 / 0700); give the result, and everything
    written inside a folder, the usual mode."""
    mask = os.umask(0)
    os.umask(mask)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)
