"""Helpers shared by test modules (importable as `tests_helpers` because pytest puts tests/ on sys.path).

Images come from ``$DERM_CLOUD_DATA``, else ``../shared/data`` beside the repo, else the copy that
``derm-cloud data fetch ham10000`` put in the derm-cloud cache (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0), and
are never copied here. A test that needs them is found by :func:`needs_ham10000` (it, one of its fixtures or a
helper it calls refers to a path in the data folder or to one of the helpers below) and marked ``ham10000`` by
``conftest.py``, which skips it, naming how to get the data, when the folder is missing, except under ``CI=true``,
where a missing folder fails the run.
"""

from __future__ import annotations

import csv
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    """``$DERM_CLOUD_DATA``; else ``../shared/data``; else the datasets `derm-cloud data fetch` put in the cache."""
    if env := os.environ.get("DERM_CLOUD_DATA"):
        return Path(env).expanduser().resolve()
    shared = ROOT.parent / "shared" / "data"
    if (shared / "ham10000" / "dev.csv").is_file():
        return shared.resolve()
    from derm_cloud.models.cache import cache_dir

    fetched = cache_dir() / "datasets"  # `derm-cloud data fetch ham10000` writes ham10000/dev.csv there
    return fetched.resolve() if (fetched / "ham10000" / "dev.csv").is_file() else shared.resolve()


DATA_DIR = _data_dir()
DEV_CSV = DATA_DIR / "ham10000" / "dev.csv"
HOW_TO_GET_DATA = (
    f"needs the HAM10000 dev split, not found at {DEV_CSV}: run `derm-cloud data fetch ham10000` (it writes "
    "ham10000/dev.csv into the derm-cloud cache, where the tests find it), or set DERM_CLOUD_DATA to a folder "
    "holding ham10000/dev.csv (the project's shared/data folder beside the repo is found as ../shared/data)"
)
#: Whether DEV_CSV is the project's own split (1,321 images) rather than the split `derm-cloud data fetch ham10000`
#: derives by rule (derm_cloud.data.dev_split; a fetched folder holds SOURCE.json). Tests marked ``project_data``
#: pin figures of the project's data folder and need it.
PROJECT_SPLIT = DEV_CSV.is_file() and not (DEV_CSV.parent / "SOURCE.json").is_file()
HOW_TO_GET_PROJECT_DATA = (
    f"pins figures of the project's own data folder (ham10000/dev.csv with 1,321 images, fitzpatrick17k/), and "
    f"{DEV_CSV} is the dev split a fetch derived by rule: set DERM_CLOUD_DATA to the project's shared/data "
    "folder to run it"
)

_F = TypeVar("_F", bound=Callable[..., Any])


def data_available() -> bool:
    """Whether the HAM10000 dev split is readable here."""
    return DEV_CSV.is_file()


def reads_ham10000(fn: _F) -> _F:
    """Mark a helper (or test) as reading the HAM10000 images, so every test that calls it is marked too."""
    fn.__reads_ham10000__ = True  # type: ignore[attr-defined]
    return fn


@reads_ham10000
def dev_rows(limit: int | None = None) -> list[dict[str, str]]:
    """Rows of dev.csv (HAM10000, Tschandl et al. 2018, CC BY-NC 4.0), in file order."""
    with DEV_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:limit] if limit else rows


@reads_ham10000
def dev_image(row: dict[str, str]) -> Path:
    return DEV_CSV.parent / row["file"]


@reads_ham10000
def dev_subset(n: int) -> tuple[list[dict[str, str]], Path]:
    """The first ``n`` rows of dev.csv and the manifest path."""
    return dev_rows(n), DEV_CSV


def is_data_path(value: Any) -> bool:
    """Whether ``value`` is a path (str or PathLike) in the data folder, or a list or tuple holding one.

    A command line kept as a module constant (``SUBSET = ["--dataset", str(DEV_CSV), ...]``) counts.
    """
    if isinstance(value, (list, tuple)):
        return any(is_data_path(v) for v in value)
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        return False
    text = os.fspath(value)
    return text == str(DATA_DIR) or text.startswith(str(DATA_DIR) + os.sep)


def _names(code: CodeType) -> Iterator[str]:
    """Global and attribute names a function's code uses, including its comprehensions, lambdas and inner defs."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names(const)


def needs_ham10000(fn: Any, _seen: set[int] | None = None) -> bool:
    """Whether calling ``fn`` reads the HAM10000 data folder, found from its code (not by running it).

    True when ``fn`` is marked by :func:`reads_ham10000`, has a default or closure value that is a path in the data
    folder, or its code names a global that is such a path (``DEV_CSV``, ``HAM_META = DEV_CSV.parent / ...``) or a
    function of which this holds (module helpers are followed, so ``config(source=DEV_CSV)`` counts).
    """
    seen = set() if _seen is None else _seen
    fn = inspect.unwrap(fn) if callable(fn) else fn
    if id(fn) in seen:
        return False
    seen.add(id(fn))
    if getattr(fn, "__reads_ham10000__", False):
        return True
    code = getattr(fn, "__code__", None)
    if not isinstance(code, CodeType):
        return False
    values = [*(getattr(fn, "__defaults__", None) or ()), *(getattr(fn, "__kwdefaults__", None) or {}).values()]
    values += [cell.cell_contents for cell in getattr(fn, "__closure__", None) or () if _has_contents(cell)]
    if any(is_data_path(v) or (inspect.isfunction(v) and needs_ham10000(v, seen)) for v in values):
        return True
    module_globals: dict[str, Any] = getattr(fn, "__globals__", {})
    for name in set(_names(code)):
        # A name not global in fn's module may be imported inside it (`from tests_helpers import DEV_CSV`).
        value = module_globals[name] if name in module_globals else globals().get(name)
        if is_data_path(value) or (inspect.isfunction(value) and needs_ham10000(value, seen)):
            return True
    return False


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises ValueError
    except ValueError:
        return False
    return True
