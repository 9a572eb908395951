#!/usr/bin/env bash
# BGP with GoBGP configured for IPv4 unicast only (its OPEN carries only the IPv4/unicast multiprotocol
# capability), on the site router behind strongSwan, against vgw whose address space also has an IPv6
# prefix. vgw must send that peer nothing of IPv6: no MP_REACH/MP_UNREACH for IPv6 and no IPv6
# End-of-RIB (RFC 4760 §6, RFC 4724), which GoBGP answers with a reset.
#   sitelan 10.1.0.10, sitelan2 10.11.0.10 - site (charon + gobgpd, peering 10.1.255.254, AS 65010)
#   - internet 198.18.0.0/24 - hub (vgw, peering 10.2.255.254, AS 65515, 10.2.0.0/16 + 2001:db8:2::/48)
# Checks: the session comes up; vgw learns GoBGP's 10.1.0.0/16 and 10.11.0.0/16 (origin EBgp, asPath
# 65010), 10.11.0.10 answers pings from the hub LAN, GoBGP's RIB has vgw's 10.2.0.0/16 and no IPv6
# route arrives; then for GOBGP_SECONDS (default 300) the session stays Established with zero resets on
# both sides (vgw's flapCount and connectedDuration, GoBGP's neighbor state and flop count) and GoBGP
# never logs an address family "not available for session". Then GoBGP resets the session 4 times with
# a shutdown communication: vgw's log decodes the Cease NOTIFICATION with its text, flapCount is 4,
# flapReason says the session flaps, and vgw_bgp_session_{resets_total,flaps} count 4.
# Usage: tests/interop/gobgp.sh   (root; GOBGP_SECONDS=30 for a quick run)
set -u
# bgp.sh, sourced, defines the lab helpers (bgp_lab, bgp_site_swan, bgp_hub, learned, ...) only.
. "$(dirname "${BASH_SOURCE[0]}")/bgp.sh"

GOBGP_SECONDS=${GOBGP_SECONDS:-300}
GOBGP_API=127.0.0.1:50051
METRICS=127.0.0.1:9464

# gobgp_start NS NAME ASN PEER_ADDR NEIGHBOR NEIGHBOR_ASN: gobgpd in NS with one IPv4-unicast-only
# neighbour, its gRPC API on the namespace's loopback; log in $LAB_WORK/NAME/gobgpd.log.
gobgp_start() {
    local n=$1 name=$2 asn=$3 addr=$4 nbr=$5 nbr_asn=$6
    local dir="$LAB_WORK/$name"; mkdir -p "$dir"
    cat >"$dir/gobgpd.toml" <<EOF
[global.config]
  as = $asn
  router-id = "$addr"
  port = 179
  local-address-list = ["$addr"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "$nbr"
    peer-as = $nbr_asn
  [neighbors.transport.config]
    local-address = "$addr"
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 4
  [neighbors.timers.config]
    connect-retry = 2
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
EOF
    ip netns exec "$(ns "$n")" gobgpd -f "$dir/gobgpd.toml" -t toml --api-hosts "$GOBGP_API" --pprof-disable -p \
        >"$dir/gobgpd.log" 2>&1 &
    LAB_PIDS+=($!)
    wait_for 10 gobgp_ "$n" global || return 1
}
gobgp_() { local n=$1; shift; in_ns "$n" gobgp -u "${GOBGP_API%:*}" -p "${GOBGP_API#*:}" "$@"; }

# gobgp_neighbor FIELD: "state flops" of GoBGP's one neighbour, from its JSON.
gobgp_neighbor() {
    gobgp_ site -j neighbor "$HUB_PEER" | python3 -c '
import json, sys
n = json.load(sys.stdin)
if isinstance(n, list):
    n = n[0]
s = n.get("state", {})
print(s.get("session_state", s.get("session-state", "?")), s.get("flops", 0))'
}
gobgp_established() { case "$(gobgp_neighbor)" in 6\ *|established\ *|ESTABLISHED\ *) return 0 ;; esac; return 1; }
gobgp_has_hub_route() { gobgp_ site global rib -a ipv4 10.2.0.0/16 | grep -q 65515; }
# vgw_peer FIELDS: list-bgp-peer-status fields of the GoBGP peer, tab-separated.
vgw_peer() { vgwc hub vnet-gateway list-bgp-peer-status --peer "$SITE_PEER" --query "value[0].[$1]" -o tsv | tr '\t\n' '  ' | sed 's/ *$//'; }

gobgp_fail() {
    fail "$1"
    echo "--- gobgpd.log (tail)"; tail -n 25 "$LAB_WORK/gobgp/gobgpd.log" 2>/dev/null
    echo "--- vgw RouteDiagnosticLog (tail)"; vgwc hub logs --category RouteDiagnosticLog 2>/dev/null | tail -n 15
    lab_cleanup
}

scenario_gobgp() {
    local name="GoBGP (IPv4 unicast only) stays Established for ${GOBGP_SECONDS} s with zero resets; routes flow both ways"
    bgp_lab
    LAB_VGW_ARGS="--metrics-listen $METRICS" lab_vgw hub hub || { gobgp_fail "$name: vgw did not start"; return; }
    bgp_site_swan || { gobgp_fail "$name: charon did not start"; return; }
    HUB_SPACE="10.2.0.0/16 2001:db8:2::/48" bgp_hub
    wait_for 10 is_connected hub to-site || { gobgp_fail "$name: tunnel not Connected"; return; }
    gobgp_start site gobgp 65010 "$SITE_PEER" "$HUB_PEER" 65515 || { gobgp_fail "$name: gobgpd did not start"; return; }
    gobgp_ site global rib add -a ipv4 10.1.0.0/16 >/dev/null && gobgp_ site global rib add -a ipv4 10.11.0.0/16 >/dev/null \
        || { gobgp_fail "$name: could not add GoBGP's routes"; return; }
    if ! wait_for 30 peer_up hub "$SITE_PEER"; then
        gobgp_fail "$name: BGP not Connected: $(vgw_peer 'state, lastError')"; return
    fi
    local t_up; t_up=$(date +%s)
    local r problems=""
    wait_for 10 has_learned hub 10.11.0.0/16
    for p in 10.1.0.0/16 10.11.0.0/16; do
        r=$(learned hub "$p")
        [ "$r" = "EBgp 65010 $SITE_PEER" ] || problems="$problems $p=[$r]"
    done
    [ -z "$problems" ] || { gobgp_fail "$name: learned routes wrong:$problems"; return; }
    wait_for 5 kernel_has hub 10.11.0.0/16 || { gobgp_fail "$name: 10.11.0.0/16 not in the hub's kernel routes"; return; }
    wait_for 10 in_ns hublan ping -c 1 -W 1 10.11.0.10 || { gobgp_fail "$name: 10.11.0.10 unreachable from the hub LAN"; return; }
    wait_for 10 gobgp_has_hub_route || { gobgp_fail "$name: GoBGP's RIB lacks vgw's 10.2.0.0/16: $(gobgp_ site global rib -a ipv4 2>&1 | head -5)"; return; }
    # vgw advertises only what the session negotiated: its IPv6 prefix is not in the Adj-RIB-Out.
    local adv
    adv=$(vgwc hub vnet-gateway list-advertised-routes --peer "$SITE_PEER" --query 'value[].network' -o tsv | tr '\n' ' ' | sed 's/ *$//')
    [ "$adv" = "10.2.0.0/16" ] || { gobgp_fail "$name: vgw advertises [$adv] to an IPv4-only peer (expected 10.2.0.0/16 only)"; return; }
    echo "  Established; vgw learned 10.1.0.0/16 and 10.11.0.0/16, GoBGP has 10.2.0.0/16; holding for ${GOBGP_SECONDS} s"
    # Hold: sample both sides every 5 s.
    local end=$(( t_up + GOBGP_SECONDS )) s
    while [ "$(date +%s)" -lt "$end" ]; do
        s=$(vgw_peer 'state, flapCount')
        [ "$s" = "Connected 0" ] || { gobgp_fail "$name: vgw's session left Connected after $(( $(date +%s) - t_up )) s: [$s] $(vgw_peer 'lastError, flapReason')"; return; }
        gobgp_established || { gobgp_fail "$name: GoBGP's neighbour left Established after $(( $(date +%s) - t_up )) s: $(gobgp_neighbor)"; return; }
        sleep 5
    done
    local flops dur resets
    flops=$(gobgp_neighbor | awk '{print $2}')
    dur=$(vgw_peer connectedDuration)
    resets=$(vgwc hub logs --category RouteDiagnosticLog | grep -c "BGP session with $SITE_PEER down")
    problems=""
    [ "$flops" = 0 ] || problems="$problems GoBGP counted $flops flops;"
    [ "$resets" = 0 ] || problems="$problems vgw logged $resets session downs;"
    [ "$(vgw_peer flapCount)" = 0 ] || problems="$problems flapCount $(vgw_peer flapCount);"
    # connectedDuration is hh:mm:ss.fffffff: the session must have lasted the whole hold.
    local secs; secs=$(echo "$dur" | awk -F'[:.]' '{print $1 * 3600 + $2 * 60 + $3}')
    [ "$secs" -ge "$GOBGP_SECONDS" ] || problems="$problems connectedDuration $dur < ${GOBGP_SECONDS} s;"
    if grep -qi "not available for session\|malformed" "$LAB_WORK/gobgp/gobgpd.log"; then
        problems="$problems GoBGP logged: $(grep -i -m1 'not available for session\|malformed' "$LAB_WORK/gobgp/gobgpd.log" | head -c 300);"
    fi
    gobgp_ site global rib -a ipv6 2>/dev/null | grep -q 2001:db8 && problems="$problems GoBGP has an IPv6 route;"
    gobgp_has_hub_route || problems="$problems GoBGP lost 10.2.0.0/16;"
    has_learned hub 10.11.0.0/16 || problems="$problems vgw lost 10.11.0.0/16;"
    [ -z "$problems" ] || { gobgp_fail "$name:$problems"; return; }
    pass "$name (connectedDuration $dur, GoBGP flops $flops, vgw flapCount 0)"
    gobgp_flaps
    lab_cleanup
}

# gobgp_flaps (in the lab scenario_gobgp left): GoBGP resets the session 4 times with a shutdown
# communication; vgw's lastError decodes the Cease NOTIFICATION (RFC 4486, RFC 9003), flapCount is 4,
# flapReason says it flaps, and the metrics count the resets.
gobgp_flaps() {
    local name="GoBGP resets the session 4 times: vgw decodes the NOTIFICATION and reports flapping" i
    for i in 1 2 3 4; do
        gobgp_ site neighbor "$HUB_PEER" reset --reason "flap test $i" >/dev/null \
            || { gobgp_fail "$name: gobgp neighbor reset failed"; return; }
        wait_for 10 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vnet-gateway list-bgp-peer-status --peer $SITE_PEER --query 'value[0].flapCount' -o tsv)\" = $i ]" \
            || { gobgp_fail "$name: flapCount is [$(vgw_peer flapCount)] after reset $i"; return; }
        wait_for 40 peer_up hub "$SITE_PEER" || { gobgp_fail "$name: no session after reset $i: $(vgw_peer 'state, lastError')"; return; }
    done
    local reason last metrics
    reason=$(vgw_peer flapReason)
    # The reset's own down line (later connection attempts GoBGP closes while it idles log their own).
    last=$(vgwc hub logs --category RouteDiagnosticLog | grep "BGP session with $SITE_PEER down: peer sent NOTIFICATION" | tail -1)
    metrics=$(in_ns hub curl -s "http://$METRICS/metrics")
    echo "  flapReason: $reason"
    case "$reason" in
        "reset 4 times in the last 5 minutes; last: peer sent NOTIFICATION Cease / Administrative Reset"*) ;;
        *) gobgp_fail "$name: flapReason [$reason]"; return ;;
    esac
    case "$last" in
        *'peer sent NOTIFICATION Cease / Administrative Reset: shutdown communication "flap test 4"'*) ;;
        *) gobgp_fail "$name: the last down reason does not carry GoBGP's communication: [$last]"; return ;;
    esac
    echo "$metrics" | grep -q "^vgw_bgp_session_resets_total{neighbor=\"$SITE_PEER\".*} 4\$" \
        && echo "$metrics" | grep -q "^vgw_bgp_session_flaps{neighbor=\"$SITE_PEER\".*} 4\$" \
        || { gobgp_fail "$name: metrics: $(echo "$metrics" | grep vgw_bgp_session)"; return; }
    pass "$name"
}

scenario_gobgp
summary
