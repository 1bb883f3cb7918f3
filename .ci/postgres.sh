#!/usr/bin/env bash
# Makes sure the local PostgreSQL server the tests use is accepting connections on 127.0.0.1:5432,
# starting the installed cluster if it is not. Idempotent; safe to run by hand before
# `PARALLAX_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test --workspace`.
set -euo pipefail

host=127.0.0.1
port=5432

if pg_isready -q -h "$host" -p "$port"; then
    echo "postgres: already accepting connections on $host:$port"
    exit 0
fi

# The Debian/Ubuntu packaging keeps one directory per major version; take the newest.
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$version" ]]; then
    echo "postgres: not running on $host:$port and no cluster found under /etc/postgresql" >&2
    exit 1
fi

echo "postgres: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main start

for _ in $(seq 1 60); do
    if pg_isready -q -h "$host" -p "$port"; then
        echo "postgres: accepting connections on $host:$port"
        exit 0
    fi
    sleep 0.5
done
echo "postgres: cluster $version/main did not accept connections within 30s" >&2
exit 1
