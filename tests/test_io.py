"""Atomic writes: the old file or folder stays in place until the new one takes it, nothing is left behind,
and what is written (files inside folders included) gets the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import umaf.io
from umaf.errors import UmafError
from umaf.io import atomic_path


def usual_mode(directory: bool = False) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def write_folder(path: Path, text: str, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite, is_dir=True) as tmp:
        (tmp / "config.json").write_text(text)
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors creates files 0600
        (tmp / "sub").mkdir()


def test_a_file_is_replaced_in_one_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")
    seen, real_replace = [], os.replace

    def replace(src, dst) -> None:
        seen.append(Path(dst).exists())
        real_replace(src, dst)

    monkeypatch.setattr(umaf.io.os, "replace", replace)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and seen == [True], "the old file is there until the rename"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert stat.S_IMODE(path.stat().st_mode) == usual_mode()


def test_a_folder_is_swapped_and_its_files_get_the_usual_mode(tmp_path: Path) -> None:
    path = tmp_path / "component"
    write_folder(path, "old")
    write_folder(path, "new")
    assert (path / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["component"], "no temporary or old folder left"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.rglob("*")]}
    assert modes == {"component": usual_mode(True), "sub": usual_mode(True), "config.json": usual_mode(),
                     "model.safetensors": usual_mode()}  # fmt: skip


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "component"
    write_folder(path, "old")
    real_replace, calls = os.replace, []

    def replace(src, dst) -> None:
        calls.append(dst)
        if len(calls) == 2:  # moving the new folder in
            raise OSError("disk trouble")
        real_replace(src, dst)

    monkeypatch.setattr(umaf.io.os, "replace", replace)
    with pytest.raises(OSError, match="disk trouble"):
        write_folder(path, "new")
    assert (path / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["component"]


def test_a_failing_block_and_an_existing_path_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "component"
    write_folder(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path, overwrite=True, is_dir=True) as tmp:
        (tmp / "config.json").write_text("half")
        raise RuntimeError
    with pytest.raises(UmafError, match="--overwrite"):
        write_folder(path, "new", overwrite=False)
    assert (path / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["component"]
