#!/usr/bin/env bash
# Redundant tunnels and active-active gateways: failover without downtime.
#
#   hubhost 10.1.0.10 ─┬─ hub0 (vgw instance 0, 198.18.10.2, BGP 10.255.0.1) ─┐
#        (hub LAN 10.1.0.0/24, a bridge)                                       ├─ inet ─ site (vgw, 198.18.12.2,
#                      └─ hub1 (vgw instance 1, 198.18.11.2, BGP 10.255.0.2) ─┘          BGP 10.255.2.1) ─ sitehost 10.2.0.10
#
# The hub is one active-active vnet-gateway served by two vgw instances: hub0 holds the configuration,
# hub1 replicates it (--replicate) and each backs up the other's routes over the hub LAN. The site is a
# vgw with two connections (one per hub instance) and BGP on each (timers 3/9). hubhost routes the
# site through hub0; a ping stream (20/s) runs from hubhost to sitehost during every scenario.
# Scenarios:
#   dpd    - cut hub0's underlay link: dead-peer detection (dpdTimeoutSeconds 1) takes the tunnel and its
#            BGP routes down; at most 2 s of pings lost; restoring the link loses none.
#   bfd    - the same with BFD (100 ms x 3) on both connections: at most 1 s lost.
#   ecmp   - the site learns the hub's prefix over both tunnels and spreads 64 UDP flows over both.
#   tcp    - a TCP transfer running across the cut completes with its data intact (sha256).
#   reset  - `vnet-gateway reset --gateway-vip` of hub0 (asked on hub1, forwarded): within the same bounds;
#            `vpn-connection show` lists both tunnels with their status; hub1 refuses writes.
#   drill  - `vnet-gateway failover-drill` on hub0 reports a loss window consistent with the ping stream.
# Usage: tests/interop/failover.sh [scenario ...]   (default: all; root)
set -u
LAB_PREFIX="${LAB_PREFIX:-fo}"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PSK=FailoverDemoKey1
PINGLOSS="$(dirname "${BASH_SOURCE[0]}")/pingloss.py"
TOKEN_FILE="$LAB_WORK/api.token"

# fo_lab: namespaces, the hub LAN bridge, the internet router, the site LAN.
fo_lab() {
    lab_add_ns inet router
    lab_add_ns hub0 router
    lab_add_ns hub1 router
    lab_add_ns site router
    lab_add_ns hubhost
    lab_add_ns sitehost
    lab_add_ns hublan
    lab_link inet 198.18.10.254/24 hub0 198.18.10.2/24
    lab_link inet 198.18.11.254/24 hub1 198.18.11.2/24
    lab_link inet 198.18.12.254/24 site 198.18.12.2/24
    for n in hub0 hub1 site; do ip -n "$(ns "$n")" route add default via "198.18.$(fo_net "$n").254"; done
    ip -n "$(ns hublan)" link add br0 type bridge
    ip -n "$(ns hublan)" link set br0 up
    local member addr
    for member in hub0:10.1.0.2 hub1:10.1.0.3 hubhost:10.1.0.10; do
        addr=${member#*:}; member=${member%%:*}
        ip link add "b-$member" netns "$(ns hublan)" type veth peer name lan netns "$(ns "$member")"
        ip -n "$(ns hublan)" link set "b-$member" master br0 up
        ip -n "$(ns "$member")" addr add "$addr/24" dev lan
        ip -n "$(ns "$member")" link set lan up
    done
    ip -n "$(ns hubhost)" route add 10.2.0.0/16 via 10.1.0.2
    lab_link site 10.2.0.1/24 sitehost 10.2.0.10/24
    ip -n "$(ns sitehost)" route add default via 10.2.0.1
    head -c 24 /dev/urandom | base64 >"$TOKEN_FILE"
    chmod 600 "$TOKEN_FILE"
}
fo_net() { case $1 in hub0) echo 10 ;; hub1) echo 11 ;; site) echo 12 ;; esac; }

# fo_gateways BFD(0|1): starts the three daemons and configures them (the hub on hub0 only).
fo_gateways() {
    local bfd=${1:-0} bfd_flags=()
    [ "$bfd" = 1 ] && bfd_flags=(--enable-bfd --bfd-interval 100 --bfd-multiplier 3)
    LAB_VGW_ARGS="--instance 0 --api-listen 10.1.0.2:7443 --api-token-file $TOKEN_FILE --peer-instance 10.1.0.3:7443 --p2s-download-port 0" \
        lab_vgw hub0 hub0 || return 1
    LAB_VGW_ARGS="--instance 1 --api-listen 10.1.0.3:7443 --api-token-file $TOKEN_FILE --peer-instance 10.1.0.2:7443 --replicate --p2s-download-port 0" \
        lab_vgw hub1 hub1 || return 1
    LAB_VGW_ARGS="--p2s-download-port 0" lab_vgw site site || return 1
    vgwc hub0 vnet-gateway create -n hub-gw --public-ip-addresses 198.18.10.2 198.18.11.2 \
        --vnet-address-space 10.1.0.0/16 --asn 65010 --bgp-peering-address 10.255.0.1,10.255.0.2 -o none || return 1
    vgwc hub0 local-gateway create -n site --gateway-ip-address 198.18.12.2 --asn 65020 \
        --bgp-peering-address 10.255.2.1 --bgp-hold-time 9 --bgp-keepalive 3 -o none || return 1
    vgwc hub0 vpn-connection create -n to-site --local-gateway2 site --shared-key "$PSK" --enable-bgp \
        --dpd-timeout-seconds 1 "${bfd_flags[@]}" -o none || return 1
    vgwc site vnet-gateway create -n site-gw --public-ip-addresses 198.18.12.2 --vnet-address-space 10.2.0.0/16 \
        --asn 65020 --bgp-peering-address 10.255.2.1 -o none || return 1
    local i
    for i in 0 1; do
        vgwc site local-gateway create -n "hub$i" --gateway-ip-address "198.18.1$i.2" --asn 65010 \
            --bgp-peering-address "10.255.0.$((i + 1))" --bgp-hold-time 9 --bgp-keepalive 3 -o none || return 1
        vgwc site vpn-connection create -n "to-hub$i" --local-gateway2 "hub$i" --shared-key "$PSK" --enable-bgp \
            --dpd-timeout-seconds 1 "${bfd_flags[@]}" -o none || return 1
    done
}

# peer_up GW NEIGHBOR: the BGP session is Connected (and, with BFD on, its BFD session Up).
peer_up() {
    local row; row=$(vgwc "$1" vnet-gateway list-bgp-peer-status --peer "$2" --query 'value[0].[state, bfdState]' -o tsv 2>/dev/null)
    case "${FO_BFD:-0}:$row" in 0:Connected*|1:Connected*Up) return 0 ;; *) return 1 ;; esac
}
all_up() {
    is_connected site to-hub0 && is_connected site to-hub1 && peer_up site 10.255.0.1 && peer_up site 10.255.0.2 \
        && peer_up hub0 10.255.2.1 && peer_up hub1 10.255.2.1 \
        && in_ns hubhost ping -c 1 -W 1 10.2.0.10
}
# hub1 backs up hub0: it routes the site via its own tunnel, hub0 has the backup via hub1.
backups_in_place() { ip -n "$(ns hub0)" route show 10.2.0.0/16 | grep -q "via 10.1.0.3"; }

# fo_up BFD: the lab, the gateways, everything converged.
fo_up() {
    FO_BFD=$1
    fo_lab && fo_gateways "$1" || return 1
    wait_for 40 all_up || { echo "not converged:"; vgwc site vpn-connection list -o table 2>&1 | tail -5; return 1; }
    wait_for 10 backups_in_place || { echo "hub0 has no backup route via hub1"; ip -n "$(ns hub0)" route; return 1; }
}

now() { date +%s.%N; }

# ping_start: a 20/s ping stream from hubhost to sitehost, with timestamps and unanswered probes shown.
ping_start() {
    PING_OUT="$LAB_WORK/ping.$RANDOM"
    # Not through a shell function: the pid must be ping's own, so SIGINT reaches ping alone.
    ip netns exec "$(ns hubhost)" ping -D -O -i 0.05 -W 1 10.2.0.10 >"$PING_OUT" 2>&1 &
    PING_PID=$!
    sleep 1
}
# ping_stop CUT RESTORE: stops the stream and sets FAILOVER_MS / RESTORE_MS.
ping_stop() {
    local cut=$1 restore=$2 end
    sleep 1.5
    end=$(now)
    kill -INT "$PING_PID" 2>/dev/null; wait "$PING_PID" 2>/dev/null
    local out; out=$(python3 "$PINGLOSS" "$PING_OUT" 0.05 "$cut" "$restore" "$end")
    echo "  ping stream: $out"
    FAILOVER_MS=$(sed -n 's/.*failover_ms=\([-0-9]*\).*/\1/p' <<<"$out")
    RESTORE_MS=$(sed -n 's/.*restore_ms=\([-0-9]*\).*/\1/p' <<<"$out")
}

# cut_and_restore LIMIT_MS NAME: cuts hub0's underlay for 6 s under the ping stream and checks the loss.
cut_and_restore() {
    local limit=$1 name=$2 cut restore
    ping_start
    cut=$(now)
    ip -n "$(ns inet)" link set e-hub0 down
    sleep 6
    restore=$(now)
    ip -n "$(ns inet)" link set e-hub0 up
    # Back to the redundant state (both tunnels and sessions up), and traffic moved back to hub0's tunnel.
    wait_for 40 all_up || { ping_stop "$cut" "$restore"; fail "$name: hub0's tunnel did not come back"; return 1; }
    sleep 3
    ping_stop "$cut" "$restore"
    if [ "$FAILOVER_MS" -lt 0 ] || [ "$FAILOVER_MS" -gt "$limit" ]; then
        fail "$name: ${FAILOVER_MS} ms of pings lost at the cut (limit $limit)"; return 1
    fi
    if [ "$RESTORE_MS" -ne 0 ]; then
        fail "$name: ${RESTORE_MS} ms of pings lost when the link came back (limit 0)"; return 1
    fi
    pass "$name: ${FAILOVER_MS} ms lost at the cut (limit $limit), none at the restore"
}

scenario_dpd() {
    local name="dpd: cutting one of two tunnels (BGP 3/9, dpdTimeoutSeconds 1)"
    fo_up 0 || { fail "$name: setup"; lab_cleanup; return; }
    cut_and_restore 2000 "$name" || { lab_cleanup; return; }
    # The returning path was held down before it took traffic back.
    if vgwc site logs --category RouteDiagnosticLog | grep -q "10.255.0.1 held down for 2 s"; then
        pass "dpd: the returning session was held down 2 s before taking traffic back"
    else
        fail "dpd: no hold-down logged for the returning session"
    fi
    lab_cleanup
}

scenario_bfd() {
    local name="bfd: cutting one of two tunnels (BFD 100 ms x 3)"
    fo_up 1 || { fail "$name: setup"; lab_cleanup; return; }
    cut_and_restore 1000 "$name"
    lab_cleanup
}

# ecmp: the site learns the hub's prefix from both instances (a multipath set) and spreads flows over
# both tunnels by flow hash.
scenario_ecmp() {
    local name="ecmp: the site spreads flows over both tunnels"
    fo_up 0 || { fail "$name: setup"; lab_cleanup; return; }
    local paths
    paths=$(vgwc site vnet-gateway list-learned-routes --query "length(value[?network=='10.1.0.0/16'])" -o tsv)
    egress() { vgwc site vpn-connection show -n "$1" --query egressBytesTransferred -o tsv; }
    local a0 b0 a1 b1
    a0=$(egress to-hub0); b0=$(egress to-hub1)
    # 64 UDP flows (one source port each) from the site LAN to the hub LAN.
    in_ns sitehost python3 -c '
import socket
for port in range(40000, 40064):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.2.0.10", port))
    for _ in range(10):
        s.sendto(b"x" * 200, ("10.1.0.10", 9))
    s.close()'
    sleep 1
    a1=$(egress to-hub0); b1=$(egress to-hub1)
    echo "  learned paths for 10.1.0.0/16: $paths; egress bytes to-hub0 +$((a1 - a0)), to-hub1 +$((b1 - b0))"
    if [ "$paths" = 2 ] && [ $((a1 - a0)) -gt 10000 ] && [ $((b1 - b0)) -gt 10000 ]; then
        pass "$name"
    else
        fail "$name"
    fi
    lab_cleanup
}

scenario_tcp() {
    local name="tcp: a transfer across the cut completes intact"
    fo_up 0 || { fail "$name: setup"; lab_cleanup; return; }
    head -c 24M /dev/urandom >"$LAB_WORK/payload"
    local want got
    want=$(sha256sum <"$LAB_WORK/payload" | cut -d' ' -f1)
    in_ns sitehost timeout 60 nc -l -p 5001 >"$LAB_WORK/received" &
    local rx=$!
    sleep 0.5
    # About 3 MB/s, so the transfer spans the cut.
    in_ns hubhost timeout 60 python3 -c '
import socket, sys, time
data = open(sys.argv[1], "rb").read()
s = socket.create_connection(("10.2.0.10", 5001), timeout=30)
for i in range(0, len(data), 65536):
    s.sendall(data[i:i + 65536]); time.sleep(0.02)
s.shutdown(socket.SHUT_WR); s.close()' "$LAB_WORK/payload" &
    local tx=$!
    sleep 2
    ip -n "$(ns inet)" link set e-hub0 down
    sleep 4
    ip -n "$(ns inet)" link set e-hub0 up
    wait "$tx"; local tx_rc=$?
    wait "$rx"
    got=$(sha256sum <"$LAB_WORK/received" | cut -d' ' -f1)
    if [ "$tx_rc" = 0 ] && [ "$want" = "$got" ]; then
        pass "$name (24 MiB, sha256 equal)"
    else
        fail "$name: sender rc $tx_rc, received $(stat -c %s "$LAB_WORK/received") bytes, sha256 $( [ "$want" = "$got" ] && echo equal || echo differs)"
    fi
    lab_cleanup
}

scenario_reset() {
    local name="reset: active-active, resetting instance 0 (asked on instance 1)"
    fo_up 0 || { fail "$name: setup"; lab_cleanup; return; }
    local tunnels
    tunnels=$(vgwc hub0 vpn-connection show -n to-site --query 'tunnelConnectionStatus[].[tunnel, connectionStatus]' -o tsv | tr '\t\n' ' |')
    echo "  vpn-connection show (hub0): $tunnels"
    if [ "$(grep -o Connected <<<"$tunnels" | wc -l)" != 2 ]; then
        fail "$name: tunnelConnectionStatus does not list two Connected tunnels: $tunnels"; lab_cleanup; return
    fi
    if vgwc hub1 local-gateway update -n site --asn 65021 -o none 2>"$LAB_WORK/refused"; then
        fail "$name: the replica accepted a write"; lab_cleanup; return
    fi
    grep -q "replicates its configuration" "$LAB_WORK/refused" || { fail "$name: refusal unclear: $(cat "$LAB_WORK/refused")"; lab_cleanup; return; }
    local cut restore
    ping_start
    cut=$(now)
    vgwc hub1 vnet-gateway reset --gateway-vip 198.18.10.2 -o none || { fail "$name: reset refused"; lab_cleanup; return; }
    restore=$(now)
    wait_for 40 all_up || { ping_stop "$cut" "$restore"; fail "$name: hub0 did not come back"; lab_cleanup; return; }
    sleep 3
    ping_stop "$cut" "$restore"
    # A reset is cut and restore at once: every loss counts against the failover bound.
    local total=$((FAILOVER_MS + RESTORE_MS))
    if [ "$total" -le 2000 ]; then
        pass "$name: ${total} ms of pings lost (limit 2000); both tunnels listed"
    else
        fail "$name: ${total} ms of pings lost (limit 2000)"
    fi
    lab_cleanup
}

scenario_drill() {
    local name="drill: failover-drill reports the loss window the ping stream saw"
    fo_up 0 || { fail "$name: setup"; lab_cleanup; return; }
    ping_start
    local cut restore report
    cut=$(now)
    report=$(vgwc hub0 vnet-gateway failover-drill --connection to-site --duration 6 --probe-address 10.2.0.10 -o json) \
        || { ping_stop "$cut" "$cut"; fail "$name: drill failed: $report"; lab_cleanup; return; }
    restore=$(now)
    ping_stop "$cut" "$restore"
    echo "$report" >"$LAB_WORK/drill.json"
    local drill_ms verdict
    drill_ms=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["failoverLossMilliseconds"] + r["restoreLossMilliseconds"])' "$LAB_WORK/drill.json")
    verdict=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' "$LAB_WORK/drill.json")
    echo "  drill: $verdict"
    local seen=$((FAILOVER_MS + RESTORE_MS)) diff
    diff=$((drill_ms - seen)); diff=${diff#-}
    # The drill's probes and the ping stream are two 20/s streams over the same paths; they agree to
    # within a few probes (500 ms), and both stay within the failover bound.
    if [ "$diff" -le 500 ] && [ "$drill_ms" -le 2000 ]; then
        pass "$name: drill ${drill_ms} ms, ping stream ${seen} ms"
    else
        fail "$name: drill ${drill_ms} ms vs ping stream ${seen} ms"
    fi
    lab_cleanup
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    [ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 2; }
    scenarios=("$@")
    [ ${#scenarios[@]} -gt 0 ] || scenarios=(dpd bfd ecmp tcp reset drill)
    for s in "${scenarios[@]}"; do "scenario_$s"; done
    summary
fi
