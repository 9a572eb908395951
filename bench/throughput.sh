#!/usr/bin/env bash
# Throughput, side by side in one run on one topology (sitelan - site - internet - hub - hublan):
# iperf3 TCP from sitelan to hublan through plain routing, strongSwan<->strongSwan (kernel-libipsec),
# wireguard-go<->wireguard-go, vgw<->strongSwan and vgw<->vgw (AES-GCM-256); median of RUNS runs.
# Prints Gbit/s and the ratios. Run as root from the repository: bash bench/throughput.sh
# Environment: SECONDS_PER_RUN (default 10), RUNS (default 3), STREAMS (default "1 4").
set -u
cd "$(dirname "$0")/.."
if [ -z "${VGW:-}" ]; then
    cargo build --release --locked -p vgw >/dev/null 2>&1 || { echo "cargo build --release failed"; exit 1; }
    VGW="$PWD/target/release/vgw"
fi
export VGW
. tests/interop/lib.sh

T=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-3}
STREAMS=${STREAMS:-"1 4"}
PSK="BenchPsk0123456789abcdef"
declare -A RESULT

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# iperf_gbps STREAMS: median Gbit/s over RUNS runs of T seconds.
iperf_gbps() {
    local p=$1 r out
    in_ns hublan iperf3 -s -D -1 >/dev/null 2>&1 || true
    for r in $(seq "$RUNS"); do
        in_ns hublan iperf3 -s -1 -D >/dev/null 2>&1
        sleep 0.3
        out=$(in_ns sitelan iperf3 -c 10.2.0.10 -t "$T" -P "$p" -J 2>/dev/null)
        echo "$out" | python3 -c 'import json,sys
try:
    print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9)
except Exception:
    print(0)'
    done | median
}

measure() {
    local name=$1 p
    for p in $STREAMS; do
        RESULT["$name/$p"]=$(iperf_gbps "$p")
        printf '  %-34s %d stream(s): %6.3f Gbit/s\n' "$name" "$p" "${RESULT["$name/$p"]}"
    done
}

swan_conf() { # NAME LOCAL REMOTE LOCAL_TS REMOTE_TS START
    mkdir -p "$LAB_WORK/$1"
    cat >"$LAB_WORK/$1/swanctl.conf" <<EOF
connections {
    peer {
        version = 2
        local_addrs = $2
        remote_addrs = $3
        proposals = aes256gcm16-prfsha256-ecp256
        local { auth = psk
                id = $2 }
        remote { auth = psk
                 id = $3 }
        children { net { local_ts = $4
                         remote_ts = $5
                         esp_proposals = aes256gcm16
                         start_action = $6 } }
    }
}
secrets { ike-peer { id-1 = $2
                     id-2 = $3
                     secret = "$PSK" } }
EOF
}

vgw_conf() { # NAME SELF PEER OWN_NET PEER_NET MODE
    vgwc "$1" vnet-gateway create -n gw --public-ip-addresses "$2" --vnet-address-space "$4" -o none
    vgwc "$1" local-gateway create -n peer --gateway-ip-address "$3" --local-address-prefixes "$5" -o none
    vgwc "$1" vpn-connection create -n tunnel --local-gateway2 peer --shared-key "$PSK" --connection-mode "$6" -o none
    vgwc "$1" vpn-connection ipsec-policy add --connection-name tunnel --ike-encryption GCMAES256 --ike-integrity SHA256 \
        --dh-group ECP256 --ipsec-encryption GCMAES256 --ipsec-integrity GCMAES256 --pfs-group None -o none
}

up_or_skip() { # NAME CHECK...
    local name=$1; shift
    if wait_for 15 "$@" && wait_for 5 in_ns sitelan ping -c 1 -W 1 10.2.0.10; then return 0; fi
    echo "  $name: tunnel did not come up; skipped"
    return 1
}

echo "vgw throughput benchmark: iperf3 TCP sitelan -> hublan, ${T} s x ${RUNS} runs (median), streams: $STREAMS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"

# 1. Plain routing.
lab_topology
ip -n "$(ns site)" route add 10.2.0.0/16 via 198.18.0.2
ip -n "$(ns hub)" route add 10.1.0.0/16 via 198.18.0.1
measure "plain routing"
lab_cleanup

# 2. strongSwan <-> strongSwan.
lab_topology
swan_conf site 198.18.0.1 198.18.0.2 10.1.0.0/16 10.2.0.0/16 start
swan_conf hub 198.18.0.2 198.18.0.1 10.2.0.0/16 10.1.0.0/16 none
lab_charon hub hub && lab_charon site site
up_or_skip "strongSwan<->strongSwan" true && measure "strongSwan<->strongSwan (libipsec)"
lab_cleanup

# 3. wireguard-go <-> wireguard-go. Each side's device gets its own name: wireguard-go's control socket
# (/var/run/wireguard/NAME.sock) lives in the file system that all namespaces share.
lab_topology
k1=$(wg genkey); k2=$(wg genkey)
echo "$k1" >"$LAB_WORK/k1"; echo "$k2" >"$LAB_WORK/k2"
for side in site hub; do
    in_ns "$side" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f "wg$side" >/dev/null 2>&1 &
    LAB_PIDS+=($!)
done
wait_for 5 in_ns site ip link show wgsite
wait_for 5 in_ns hub ip link show wghub
in_ns site wg set wgsite private-key "$LAB_WORK/k1" listen-port 51820 peer "$(echo "$k2" | wg pubkey)" allowed-ips 10.2.0.0/16 endpoint 198.18.0.2:51820
in_ns hub wg set wghub private-key "$LAB_WORK/k2" listen-port 51820 peer "$(echo "$k1" | wg pubkey)" allowed-ips 10.1.0.0/16 endpoint 198.18.0.1:51820
in_ns site ip link set wgsite up mtu 1420; in_ns hub ip link set wghub up mtu 1420
in_ns site ip route add 10.2.0.0/16 dev wgsite; in_ns hub ip route add 10.1.0.0/16 dev wghub
up_or_skip "wireguard-go" true && measure "wireguard-go<->wireguard-go"
lab_cleanup

# 4. vgw <-> strongSwan.
lab_topology
lab_vgw hub hub
swan_conf site 198.18.0.1 198.18.0.2 10.1.0.0/16 10.2.0.0/16 start
lab_charon site site
vgw_conf hub 198.18.0.2 198.18.0.1 10.2.0.0/16 10.1.0.0/16 ResponderOnly
up_or_skip "vgw<->strongSwan" is_connected hub tunnel && measure "vgw<->strongSwan (AES-GCM-256)"
lab_cleanup

# 5. vgw <-> vgw.
lab_topology
lab_vgw hub hub
lab_vgw site site
vgw_conf hub 198.18.0.2 198.18.0.1 10.2.0.0/16 10.1.0.0/16 ResponderOnly
vgw_conf site 198.18.0.1 198.18.0.2 10.1.0.0/16 10.2.0.0/16 Default
up_or_skip "vgw<->vgw" is_connected site tunnel && measure "vgw<->vgw (AES-GCM-256)"
lab_cleanup

echo
printf '%-36s' "path"; for p in $STREAMS; do printf '%14s' "$p stream(s)"; done; echo
for name in "plain routing" "strongSwan<->strongSwan (libipsec)" "wireguard-go<->wireguard-go" "vgw<->strongSwan (AES-GCM-256)" "vgw<->vgw (AES-GCM-256)"; do
    printf '%-36s' "$name"
    for p in $STREAMS; do printf '%9.3f Gb/s' "${RESULT["$name/$p"]:-0}"; done
    echo
done
echo
for p in $STREAMS; do
    vv=${RESULT["vgw<->vgw (AES-GCM-256)/$p"]:-0}
    python3 - "$p" "$vv" "${RESULT["strongSwan<->strongSwan (libipsec)/$p"]:-0}" "${RESULT["wireguard-go<->wireguard-go/$p"]:-0}" "${RESULT["plain routing/$p"]:-0}" <<'PY'
import sys
p, vv, ss, wg, plain = sys.argv[1], *map(float, sys.argv[2:])
r = lambda a, b: f"{a / b:.2f}x" if b else "n/a"
print(f"{p} stream(s): vgw/strongSwan {r(vv, ss)}, vgw/wireguard-go {r(vv, wg)}, vgw/plain {r(vv, plain)}")
PY
done
