#!/usr/bin/env bash
# An IKE_SA_INIT flood from many forged sources must not starve the peers that matter (issue 20):
#   sitelan - site (strongSwan) - 198.18.0.0/24 - hub (vgw) - hublan
#     site2 (strongSwan, new peer) 198.18.9.1 - site       flood 198.18.4.0/22 - hub
# During FLOOD_SECONDS (60) of FLOOD_RATE (20,000) IKE_SA_INIT per second from FLOOD_SOURCES (1,000)
# addresses, the established tunnel (short lifetimes) keeps passing traffic and rekeying, a new
# legitimate peer connects within 5 s, the diagnostic log lines from before the flood survive, and
# vgw's memory stays bounded (RSS printed before, during and after).
# Usage: tests/interop/flood.sh   (FLOOD_SECONDS, FLOOD_RATE, FLOOD_SOURCES in the environment)
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swan_site.sh"

FLOOD_SECONDS=${FLOOD_SECONDS:-60}
FLOOD_RATE=${FLOOD_RATE:-20000}
FLOOD_SOURCES=${FLOOD_SOURCES:-1000}
SITE2_IP=198.18.9.1
HERE="$(cd "$(dirname "$0")" && pwd)"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
metric() { in_ns hub curl -s --max-time 2 http://127.0.0.1:9464/metrics | grep -E "^$1" ; }

site2_conf() {
    mkdir -p "$LAB_WORK/site2"
    sed -e "s/$SITE_IP/$SITE2_IP/g" -e "s#10.1.0.0/16#10.3.0.0/16#" -e "s/start_action = start/start_action = none/" \
        "$LAB_WORK/site/swanctl.conf" >"$LAB_WORK/site2/swanctl.conf"
}

scenario_flood() {
    local name="flood: ${FLOOD_RATE}/s IKE_SA_INIT from ${FLOOD_SOURCES} sources for ${FLOOD_SECONDS} s"
    lab_topology
    lab_add_ns flood
    lab_add_ns site2
    lab_link flood 198.18.4.1/22 hub 198.18.7.254/22
    # site2 reaches the hub through the site's router, so vgw answers it from 198.18.0.2.
    lab_link site2 $SITE2_IP/24 site 198.18.9.2/24
    ip -n "$(ns site2)" route add default via 198.18.9.2
    ip -n "$(ns site2)" addr add 10.3.0.1/32 dev lo # charon's route for 10.3.0.0/16 needs a source in it
    ip -n "$(ns hub)" route add 198.18.9.0/24 via $SITE_IP
    ip -n "$(ns flood)" route add 198.18.0.0/24 via 198.18.7.254
    # The flood's sources: FLOOD_SOURCES addresses on the flood namespace's veth.
    local i a
    for i in $(seq 2 $((FLOOD_SOURCES + 1))); do
        a=$((4 * 256 + i)); echo "addr add 198.18.$((a / 256)).$((a % 256))/32 dev e-hub"
    done | ip -n "$(ns flood)" -batch - || { fail "$name: cannot add the flood's addresses"; lab_cleanup; return; }
    LAB_VGW_ARGS="--metrics-listen 127.0.0.1:9464" lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    local vgw_pid=${LAB_PIDS[0]}
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16-ecp256 start "rekey_time = 20s
                life_time = 30s" "rekey_time = 40s"
    site2_conf
    lab_charon site site || { fail "$name: charon did not start"; lab_cleanup; return; }
    lab_charon site2 site2 || { fail "$name: charon site2 did not start"; lab_cleanup; return; }
    hub_conf ResponderOnly
    if ! wait_for 15 is_connected hub to-site || ! wait_for 5 traffic_ok; then
        fail "$name: the site did not connect before the flood ($(conn_status hub to-site))"; lab_cleanup; return
    fi
    local logs="$LAB_WORK/hub-state/logs"
    local first; first=$(head -n 1 "$logs/vgw.jsonl")
    local rss_before; rss_before=$(rss_kb "$vgw_pid")
    local child0 ike0
    child0=$(vgwc hub vpn-connection show -n to-site --query childSaRekeys -o tsv)
    ike0=$(vgwc hub vpn-connection show -n to-site --query ikeSaRekeys -o tsv)
    echo "before the flood: RSS ${rss_before} kB, logs $(du -sk "$logs" | cut -f1) kB"

    in_ns flood timeout $((FLOOD_SECONDS + 30)) python3 "$HERE/flood_ike.py" $VGW_IP 198.18.4.2 "$FLOOD_SOURCES" \
        "$FLOOD_RATE" "$FLOOD_SECONDS" >"$LAB_WORK/flood.out" 2>&1 &
    local flood=$!
    LAB_PIDS+=("$flood")
    # Pings across the established tunnel all through the flood.
    in_ns sitelan timeout $((FLOOD_SECONDS + 30)) ping -q -i 0.2 -W 1 -w "$FLOOD_SECONDS" 10.2.0.10 >"$LAB_WORK/ping.out" 2>&1 &
    local pinger=$!
    LAB_PIDS+=("$pinger")
    sleep $((FLOOD_SECONDS / 3))
    local rss_during; rss_during=$(rss_kb "$vgw_pid")
    # A new legitimate peer during the flood: its local gateway and connection are created now and it
    # must be Connected within 5 s.
    vgwc hub local-gateway create -n site2 --gateway-ip-address $SITE2_IP --local-address-prefixes 10.3.0.0/16 -o none
    vgwc hub vpn-connection create -n to-site2 --local-gateway2 site2 --shared-key "$PSK" --connection-mode ResponderOnly -o none
    local t0; t0=$(date +%s%N)
    swan site2 --initiate --child net --timeout 10 >/dev/null 2>&1 &
    local new_ms=""
    wait_for 10 is_connected hub to-site2 && new_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    wait "$pinger" 2>/dev/null
    wait "$flood" 2>/dev/null
    sleep 2
    local rss_after; rss_after=$(rss_kb "$vgw_pid")
    local child1 ike1 state
    child1=$(vgwc hub vpn-connection show -n to-site --query childSaRekeys -o tsv)
    ike1=$(vgwc hub vpn-connection show -n to-site --query ikeSaRekeys -o tsv)
    state=$(conn_status hub to-site)
    local sent; sent=$(cat "$LAB_WORK/flood.out")
    local loss; loss=$(grep -o '[0-9.]*% packet loss' "$LAB_WORK/ping.out" | cut -d% -f1)
    local kept=no
    grep -qxF "$first" "$logs"/vgw.jsonl* && kept=yes
    echo "$sent"
    echo "RSS before ${rss_before} kB, during ${rss_during} kB, after ${rss_after} kB; logs $(du -sk "$logs" | cut -f1) kB"
    echo "admission: $(metric vgw_ike_queue_datagrams_total | tr '\n' ' ')"
    echo "summaries: $(grep -h 'IKE datagrams from' "$logs"/vgw.jsonl* | head -n 3 | grep -o '"message":"[^"]*"')"
    local why=""
    [ "$state" = Connected ] || why="$why; the site is $state"
    [ -n "$loss" ] && awk "BEGIN {exit !($loss <= 5)}" || why="$why; ${loss:-?}% of pings lost"
    [ "$child1" -gt "$child0" ] || why="$why; no Child SA rekey during the flood ($child0 -> $child1)"
    [ -n "$new_ms" ] && [ "$new_ms" -le 5000 ] || why="$why; the new peer took ${new_ms:-more than 10000} ms"
    if [ "$FLOOD_SECONDS" -ge 60 ] && ! grep -q 'IKE datagrams from' "$logs"/vgw.jsonl*; then
        why="$why; no summary line of the junk"
    fi
    [ "$kept" = yes ] || why="$why; the log lines from before the flood are gone"
    [ "$rss_after" -le $((rss_before + 65536)) ] || why="$why; RSS grew from $rss_before to $rss_after kB"
    kill -0 "$vgw_pid" 2>/dev/null || why="$why; vgw died"
    if [ -z "$why" ]; then
        pass "$name: site Connected, ${loss}% pings lost, Child SA rekeys $child0 -> $child1, IKE SA rekeys $ike0 -> $ike1, new peer Connected in ${new_ms} ms, pre-flood logs kept, RSS ${rss_before}/${rss_during}/${rss_after} kB"
    else
        fail "$name${why}"
    fi
    lab_cleanup
}

for s in ${*:-flood}; do "scenario_$s"; done
summary
