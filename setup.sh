#!/usr/bin/env bash
# One command from a fresh clone to a finished search: install, then run the default search.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
exec .venv/bin/nas launch search_spaces/snnmlp.py
