#!/usr/bin/env bash
# The test suite: lint, types, import contracts, unit/property tests and the
# netns integration tests (these need root; under CI=true they never skip).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m ruff check .
python3 -m mypy
lint-imports
python3 -m pytest -q "$@"
