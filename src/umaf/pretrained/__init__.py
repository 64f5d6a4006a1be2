"""UMAF's shipped trained components, and where every trained component is looked up.

The package carries a trained extractor, SmolLM2's generator, the fusion gate, the size interpolator,
the quick zoo and the demo's oracle LoRAs under ``umaf/pretrained/components/<relative path>`` (the
same layout as the cache). A component a user trains goes to ``cache_dir()/<relative path>`` and is then
preferred over the shipped copy; nothing is ever written into the package except by
:func:`umaf.pretrained.build.ship`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.io import WEIGHTS_NAME, is_trained

#: Folder of the shipped components (inside the installed package).
SHIPPED_DIR = Path(__file__).resolve().parent / "components"

#: Index of the shipped set: per component its files' sha256, storage dtype and build time.
MANIFEST_NAME = "manifest.json"

#: Relative paths (cache layout) of the trained components UMAF looks up by default.
EXTRACTOR = "extractor/default"
GATE = "fusion/default"
INTERPOLATOR = "interpolator/default"
ZOO = "zoo"
ORACLES = "oracles"
REFERENCE = "reference"


def generator_path(target: str) -> str:
    """Relative path of the default generator of ``target`` (``generators/<target-slug>``)."""
    from umaf.io import slug

    return f"generators/{slug(target)}"


def user_dir(relative: str) -> Path:
    """Where a user's own training writes the component at ``relative``: under the cache."""
    return cache_dir() / relative


def component_dir(relative: str) -> Path:
    """Where the component at ``relative`` is read from: the user's trained copy in the cache if there
    is one, else the shipped copy, else the (empty) cache path, so that messages name where to train."""
    user = user_dir(relative)
    if is_trained(user):
        return user
    shipped = SHIPPED_DIR / relative
    return shipped if is_trained(shipped) else user


def is_shipped(path: Path) -> bool:
    """True if ``path`` lies in the shipped set (not in the user's cache)."""
    return Path(path).resolve().is_relative_to(SHIPPED_DIR)


def zoo_roots() -> list[Path]:
    """Folders holding zoo models, the user's cache first (a model there wins over a shipped one)."""
    return [user_dir(ZOO), SHIPPED_DIR / ZOO]


def zoo_model_dir(name: str) -> Path:
    """Folder of zoo model ``name`` (what ``zoo:<name>`` loads): the user's build if there is one, else the
    shipped one, else where a build would put it. ``name`` is a plain name (:func:`umaf.models.zoo_name`)."""
    for root in zoo_roots():
        if (root / name / "config.json").is_file():
            return root / name
    return user_dir(ZOO) / name


def oracle_roots(target: str) -> list[Path]:
    """Folders holding ``target``'s oracle LoRAs, the user's cache first."""
    from umaf.io import slug

    return [user_dir(f"{ORACLES}/{slug(target)}"), SHIPPED_DIR / ORACLES / slug(target)]


def manifest() -> dict:
    """The shipped set's manifest (empty when the package ships no components)."""
    path = SHIPPED_DIR / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UmafError(f"{path} is not valid JSON; reinstall umaf or run `umaf train all --ship`") from None
    return data if isinstance(data, dict) else {}


#: What building each default component costs on a 2-core CPU, for the message that names the command.
BUILD_HINTS: dict[str, str] = {
    EXTRACTOR: "`umaf train extractor` (about 10 min on 2 CPU cores, on the quick zoo)",
    GATE: "`umaf train fusion` (under a minute; needs the full zoo's LLaMA models: `umaf zoo build`)",
    INTERPOLATOR: "`umaf train interpolator` (about a minute; needs the full zoo: `umaf zoo build`)",
}


_LOADED: dict[tuple[Path, int], Any] = {}  # keyed by folder and weights mtime: a retrained one reloads


def load_default(cls: Any, relative: str, what: str, hint: str | None = None) -> Any:
    """The default ``cls`` component at ``relative`` (:func:`component_dir`), loaded once per process and
    again when its weights change; with none, :func:`missing_component`'s error."""
    path = component_dir(relative)
    if not is_trained(path):
        raise missing_component(relative, what, hint)
    key = (path, (path / WEIGHTS_NAME).stat().st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = cls.from_pretrained(path)
    return _LOADED[key]


def missing_component(relative: str, what: str, hint: str | None = None) -> UmafError:
    """The one-line error for a component that is neither trained by the user nor shipped."""
    hint = hint or BUILD_HINTS.get(relative, "`umaf train all`")
    where = user_dir(relative)
    return UmafError(f"no trained {what} (looked in {where} and the shipped set); build it with {hint}")


__all__ = [
    "EXTRACTOR", "GATE", "INTERPOLATOR", "MANIFEST_NAME", "ORACLES", "REFERENCE", "SHIPPED_DIR", "ZOO",
    "component_dir", "generator_path", "is_shipped", "load_default", "manifest", "missing_component",
    "oracle_roots", "user_dir", "zoo_model_dir", "zoo_roots",
]
