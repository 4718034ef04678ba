import os
from pathlib import Path

import pytest

# The test process, like the insta command, lets OpenMP threads sleep while they wait (torch is several times
# slower on shared cores otherwise); the library itself sets no process-wide variable.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def shared_data_dir() -> Path:
    """The real upstream data: $INSTA_DATA_DIR, else ../shared/data next to the repo."""
    env = os.environ.get("INSTA_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cache dir unless it asks for the shared one (real-model tests reuse conversions)."""
    if os.environ.get("INSTA_TEST_SHARED_CACHE"):
        return
    monkeypatch.setenv("INSTA_CACHE_DIR", str(tmp_path_factory.mktemp("insta-cache")))


@pytest.fixture(autouse=True)
def _restore_cli_output_state():
    """``insta.cli.main`` sets process-wide output state for its command (logger levels, progress-bar variables);
    a test that runs it in-process must not change what later tests see."""
    import logging

    names = ("insta", "transformers", "datasets", "sentence_transformers", "lm_eval")
    levels = {n: logging.getLogger(n).level for n in names}
    env_vars = ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                "TQDM_DISABLE", "OMP_WAIT_POLICY")
    env = {v: os.environ.get(v) for v in env_vars}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    for v, value in env.items():
        if value is None:
            os.environ.pop(v, None)
        else:
            os.environ[v] = value


@pytest.fixture
def data_dir() -> Path:
    path = shared_data_dir()
    assert path.is_dir(), f"real data not found at {path}: set INSTA_DATA_DIR"
    return path


@pytest.fixture
def killed_after():
    """``killed_after(backend, n)``: the backend, whose evaluation raises KeyboardInterrupt (a kill between two
    cells) once it has evaluated ``n`` cells: the resume tests of every resumable run use it."""

    def make(backend, n: int):
        inner, left = backend.evaluate, [n]

        def evaluate(*a, **k):
            if left[0] == 0:
                raise KeyboardInterrupt
            left[0] -= 1
            return inner(*a, **k)

        backend.evaluate = evaluate
        return backend

    return make
