"""Where the upstream data lives: a flag, else ``$INSTA_DATA_DIR``, else ``./data``."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InstaError

ENV_VAR = "INSTA_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None = None, must_exist: bool = True) -> Path:
    """Return the data directory, from the argument, the environment variable, or ``./data``."""
    raw = data_dir or os.environ.get(ENV_VAR) or "data"
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise InstaError(f"data directory {str(path)!r} is a file, not a directory")
    if must_exist and not path.is_dir():
        raise InstaError(
            f"data directory {str(path)!r} does not exist: pass --data-dir or set ${ENV_VAR} "
            "(for example to ../shared/data), or run `insta data fetch p3|bigbench`"
        )
    return path
