#!/usr/bin/env bash
# mypy --strict over the `netmon` package as it installs. The editable install maps each top-level
# folder into the `netmon` namespace through an import hook that mypy cannot follow, so this lays
# the same mapping out as symlinks under build/typecheck/ and checks that tree.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/netmon"
for package in app agent web storage archive; do
  ln -s "../../../$package" "$tree/netmon/$package"
done
cd "$tree"
exec "../../$VENV/bin/mypy" --config-file ../../pyproject.toml -p netmon
