"""File plumbing shared by the library and the stages: atomic writes, clear input errors, checked readers.

Every stage writes through :func:`atomic_output` so that an interrupted or failing stage
never leaves a half-written file that Snakemake (or a user) could mistake for a result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd


class InputError(Exception):
    """Bad input a user can fix: the message names the file or key and what is wrong."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    With ``directory=True`` the temporary path is a fresh directory (for directory
    outputs such as the mock universe). On any exception the temporary is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp creates 0600; results on a shared cluster must be readable like any file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if directory and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, keys: Sequence[str], what: str = "file") -> dict[str, Any]:
    """Read a JSON object written by an earlier stage; fail naming the file if it is absent,
    unparsable or lacks one of ``keys``."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object")
    for key in keys:
        if key not in value:
            raise InputError(f"{path}: key '{key}' is missing")
    return value


def read_table(path: str | os.PathLike, columns: Sequence[str], what: str = "file") -> pd.DataFrame:
    """Read a CSV table written by an earlier stage; fail naming the file if it is absent,
    unparsable or lacks one of ``columns``."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable CSV ({err})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: columns {missing} are missing")
    return table
