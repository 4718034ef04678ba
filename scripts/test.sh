#!/usr/bin/env bash
# Set up, lint, then run the whole test suite, slow tests (real encoder, real data, real SmolLM2) included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# lint (rules in pyproject.toml [tool.ruff]): any finding fails the run, with ruff's own report
.venv/bin/ruff check src tests benchmarks scripts
if [ -z "${INSTA_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export INSTA_DATA_DIR="$(cd ../shared/data && pwd)"; fi
if [ ! -d "${INSTA_DATA_DIR:-}" ] && [[ " $* " != *" not slow"* ]]; then
  echo "scripts/test.sh: the real-data tests need the upstream data folder (BIG-bench, BBH, P3 templates, SuperGLUE):" \
       "set INSTA_DATA_DIR or place it at ../shared/data; -m 'not slow' runs the rest without it" >&2
  exit 2
fi
# the report's rendering test screenshots the HTML page in headless Chromium (a Debian package, not a PyPI one)
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "scripts/test.sh: could not install chromium; the report rendering test will fail" >&2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
