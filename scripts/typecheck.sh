#!/usr/bin/env bash
# mypy --strict over the `netmon` package as it installs. The editable install maps each top-level
# folder into the `netmon` namespace through an import hook that mypy cannot follow, so this lays
# the same mapping out as symlinks under build/typecheck/ and checks that tree.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
tree=build/typecheck
mkdir -p "$tree/netmon"
for package in app agent web storage archive; do
  ln -sfn "../../../$package" "$tree/netmon/$package"
done
cd "$tree"
# The cache stays in the checkout's .mypy_cache, so a second run checks only what changed.
exec "../../$VENV/bin/mypy" --config-file ../../pyproject.toml --cache-dir ../../.mypy_cache -p netmon
