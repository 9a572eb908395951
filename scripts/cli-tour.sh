#!/usr/bin/env bash
# A CLI tour without namespaces or root: builds vgw, starts a daemon in a throwaway directory (API only),
# configures a gateway, two sites
# and their connections with the az-style CLI, shows them, exports the state, and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p vgw
VGW="$PWD/target/release/vgw"
work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM
export VGW_API_SOCKET="$work/api.sock"
"$VGW" serve --state-dir "$work/state" --dataplane off --resource-group tour-rg 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do [ -S "$VGW_API_SOCKET" ] && break; sleep 0.05; done

run() { printf '\n$ vgw %s\n' "$*"; "$VGW" "$@"; }
run vnet-gateway create --name hub-gw --public-ip-addresses 198.18.0.2 --vnet-address-space 10.2.0.0/16 \
    --asn 65515 --address-prefixes 172.16.200.0/24 --client-protocol IkeV2 WireGuard -o table
run local-gateway create --name branch1 --gateway-ip-address 198.18.0.1 --local-address-prefixes 10.1.0.0/16 -o table
run local-gateway create --name branch2 --gateway-ip-address 198.18.1.1 --asn 65020 --bgp-peering-address 10.3.255.254 -o table
run vpn-connection create --name to-branch1 --local-gateway2 branch1 --shared-key "$(head -c 18 /dev/urandom | base64 | tr -d '+/=')" -o none
run vpn-connection create --name to-branch2 --local-gateway2 branch2 --shared-key "$(head -c 18 /dev/urandom | base64 | tr -d '+/=')" --enable-bgp -o none
run vpn-connection ipsec-policy add --connection-name to-branch1 --ike-encryption GCMAES256 --ike-integrity SHA384 \
    --dh-group ECP384 --ipsec-encryption GCMAES256 --ipsec-integrity GCMAES256 --pfs-group ECP384 -o table
run vpn-connection list --resource-group tour-rg --output table
run vnet-gateway show --resource-group tour-rg --name hub-gw --query "{id:id, resourceGroup:resourceGroup, sku:sku.name}"
run vpn-connection update --resource-group tour-rg --name to-branch1 --set dpdTimeoutSeconds=30 --query dpdTimeoutSeconds
run vpn-connection wait --resource-group tour-rg --name to-branch1 --exists --interval 1 --timeout 5
printf '\n$ vgw vnet-gateway show --resource-group other-rg (refused as az does, exit 3)\n'
"$VGW" vnet-gateway show --resource-group other-rg --name hub-gw || echo "exit $?"
run vpn-connection list --query "[].{name:name, status:connectionStatus, site:localNetworkGateway2.id}" -o table
run vnet-gateway list-bgp-peer-status
printf '\n$ vpn-connection create with a legacy proposal (refused)\n'
"$VGW" vpn-connection ipsec-policy add --connection-name to-branch1 --ike-encryption DES3 --ike-integrity SHA1 \
    --dh-group DHGroup2 --ipsec-encryption AES256 --ipsec-integrity SHA1 --pfs-group None || true
run export
echo
echo "demo finished: the daemon's state lived in $work and is removed now"
