#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for the deploy tests (tests/deploy/test_prometheus.py).
#
# CI calls this from .ci/run before `make test`. It does nothing when both binaries are
# already on PATH (or in /usr/bin), and otherwise installs Debian/Ubuntu's `prometheus`
# package with apt-get, without starting its service: the tests run their own server on a
# free loopback port with a throw-away storage directory.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: prometheus/promtool not found and apt-get is unavailable;" \
         "install Prometheus >= 2.37 so that both are on PATH" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
# policy-rc.d exit 101 tells invoke-rc.d not to start the packaged service.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
trap 'if [ "$CREATED_POLICY" -eq 1 ]; then $SUDO rm -f "$POLICY"; fi' EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version | head -n 1
