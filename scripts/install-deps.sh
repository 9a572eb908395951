#!/usr/bin/env bash
# Installs what the interop tests, the demo and the benchmark need from Debian's packages. Idempotent:
# does nothing when everything is present. Needs root.
set -euo pipefail
# `install-deps.sh demo` installs only what `vgw demo` needs.
if [ "${1:-}" = demo ]; then
    PACKAGES=(iproute2 iputils-ping)
else
    PACKAGES=(iproute2 iputils-ping iperf3 nftables netcat-openbsd python3 curl
        strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins
        wireguard-go wireguard-tools
        tshark prometheus chromium fonts-dejavu-core bird2 frr gobgpd sqlite3)
fi
# scripts/fuzz.sh builds the fuzz targets with cargo-fuzz (a cargo subcommand, not a Debian package).
if [ "${1:-}" != demo ] && ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked --quiet
fi
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start daemons (charon, ...) in the root namespace.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
