#!/usr/bin/env bash
# BFD against real routers: vgw's BFD service (the bfd_peer example) with BIRD 2's `protocol bfd` and
# FRR's bfdd, single hop (RFC 5881) over a veth and multihop (RFC 5883) through a router namespace.
#   single:   a 198.18.0.1 (bfd_peer) === 198.18.0.2 b (BIRD/FRR)
#   multihop: a 10.10.0.1 - 10.10.0.254 r 10.20.0.254 - 10.20.0.2 b
# Each case: both ends come Up (300 ms x 3); cutting the path (veth down, or an nft drop on the router)
# makes bfd_peer report Down (DetectionTimeExpired) in under 2 s, the measured time printed; restoring
# the path brings it Up again; shutting the peer's session makes bfd_peer report Down: with
# NeighborSignaledDown after FRR's `shutdown` (AdminDown), with DetectionTimeExpired after
# `birdc disable` (BIRD 2.0 sends no AdminDown when it removes a session).
# Usage: tests/interop/bfd.sh [case ...]   (cases: bird_single bird_multihop frr_single frr_multihop;
# default all; root). BFD_PEER overrides the bfd_peer binary.
set -u
LAB_PREFIX=bfd
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BFD_PEER="${BFD_PEER:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/debug/examples/bfd_peer}"
INTERVAL_MS=300
MULT=3
DOWN_LIMIT_MS=2000

# bfd_topology single|single6|multihop: sets A_ADDR, A_PREFIX (its length) and B_ADDR.
bfd_topology() {
    lab_add_ns a
    lab_add_ns b
    if [ "$1" = single ]; then
        lab_link a 198.18.0.1/24 b 198.18.0.2/24
        A_ADDR=198.18.0.1 A_PREFIX=24 B_ADDR=198.18.0.2
    elif [ "$1" = single6 ]; then
        lab_link a 198.18.0.1/24 b 198.18.0.2/24
        # Otherwise the cut (link down) flushes the IPv6 addresses and they never return.
        in_ns a sysctl -qw net.ipv6.conf.all.keep_addr_on_down=1
        in_ns b sysctl -qw net.ipv6.conf.all.keep_addr_on_down=1
        ip -n "$(ns a)" addr add 2001:db8:bfd::1/64 dev e-b nodad
        ip -n "$(ns b)" addr add 2001:db8:bfd::2/64 dev e-a nodad
        A_ADDR=2001:db8:bfd::1 A_PREFIX=64 B_ADDR=2001:db8:bfd::2
    else
        lab_add_ns r router
        lab_link a 10.10.0.1/24 r 10.10.0.254/24
        lab_link r 10.20.0.254/24 b 10.20.0.2/24
        ip -n "$(ns a)" route add default via 10.10.0.254
        ip -n "$(ns b)" route add default via 10.20.0.254
        A_ADDR=10.10.0.1 A_PREFIX=24 B_ADDR=10.20.0.2
    fi
}

# bfd_peer_start [--multihop]: bfd_peer in namespace a; its JSON lines go to $LAB_WORK/peer.out, and
# `peer_cmd remove|add` reaches its stdin through a fifo (held open by a sleep).
bfd_peer_start() {
    rm -f "$LAB_WORK/peer.in"; mkfifo "$LAB_WORK/peer.in"
    sleep 600 >"$LAB_WORK/peer.in" &
    LAB_PIDS+=($!)
    in_ns a "$BFD_PEER" --local "$A_ADDR" --peer "$B_ADDR" --interval-ms "$INTERVAL_MS" --multiplier "$MULT" "$@" \
        >"$LAB_WORK/peer.out" 2>"$LAB_WORK/peer.log" <"$LAB_WORK/peer.in" &
    LAB_PIDS+=($!)
}
peer_cmd() { timeout 2 sh -c "echo '$*' >'$LAB_WORK/peer.in'"; }

# Counting events lets each wait look only at lines after the previous step.
events() { grep -c '"event"' "$LAB_WORK/peer.out" 2>/dev/null || true; }
# nth_event N: the Nth event line (1-based), if there.
nth_event() { grep '"event"' "$LAB_WORK/peer.out" 2>/dev/null | sed -n "${1}p"; }
event_is() { nth_event "$1" | grep -q "\"event\":\"$2\""; }
field() { sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"; }
last_status() { grep '"status"' "$LAB_WORK/peer.out" | tail -n 1; }

# wait_event N KIND SECONDS: waits for event number N to exist and be KIND (up|down).
wait_event() { wait_for "$3" event_is "$1" "$2"; }

# bird_bfd NS NAME LOCAL NEIGHBOR MULTIHOP(on|off)
bird_bfd() {
    local n=$1 name=$2 local_=$3 nbr=$4 mh=$5
    local dir="$LAB_WORK/$name"; mkdir -p "$dir"
    cat >"$dir/bird.conf" <<EOF
router id 10.255.0.2;
log "$dir/bird.log" all;
protocol device { scan time 1; }
protocol bfd bfd1 {
  interface "*" { min rx interval $INTERVAL_MS ms; min tx interval $INTERVAL_MS ms; multiplier $MULT; };
  multihop { min rx interval $INTERVAL_MS ms; min tx interval $INTERVAL_MS ms; multiplier $MULT; };
  neighbor $nbr local $local_ multihop $mh;
}
EOF
    in_ns "$n" bird -c "$dir/bird.conf" -s "$dir/bird.ctl" -P "$dir/bird.pid" || return 1
    LAB_PIDS+=("$(cat "$dir/bird.pid")")
}
birdc_() { local name=$1; shift; birdc -s "$LAB_WORK/$name/bird.ctl" "$@"; }
bird_up() { birdc_ bird show bfd sessions | grep -q " Up "; }
bird_down() { birdc_ bird show bfd sessions | grep -q " Down "; }
# After vgw's `interval 600`: BIRD sends every 600 ms (our Required Min RX) and times out after 1.8 s.
bird_slow() { birdc_ bird show bfd sessions | grep " Up " | grep -q "0.600 *1.800"; }

# frr_bfd NS NAME LOCAL NEIGHBOR MULTIHOP(yes|no): zebra and bfdd in NS, sockets in $LAB_WORK/NAME.
frr_bfd() {
    local n=$1 name=$2 local_=$3 nbr=$4 mh=$5
    local dir="$LAB_WORK/$name"; mkdir -p "$dir"
    chown frr:frr "$dir"; chmod 755 "$LAB_WORK"
    FRR_PEER="peer $nbr local-address $local_"
    if [ "$mh" = yes ]; then FRR_PEER="peer $nbr multihop local-address $local_"; else FRR_PEER="$FRR_PEER interface e-a"; fi
    {
        echo "log file $dir/frr.log debugging"
        echo "debug bfd peer"
        echo "debug bfd network"
        echo "bfd"
        echo " $FRR_PEER"
        echo "  receive-interval $INTERVAL_MS"
        echo "  transmit-interval $INTERVAL_MS"
        echo "  detect-multiplier $MULT"
        echo "  no shutdown"
        echo " exit"
        echo "exit"
    } >"$dir/frr.conf"
    : >"$dir/zebra.conf"
    chown frr:frr "$dir"/*.conf
    in_ns "$n" /usr/lib/frr/zebra -f "$dir/zebra.conf" -i "$dir/zebra.pid" -z "$dir/zserv.api" --vty_socket "$dir" -P 0 -d \
        >"$dir/zebra.stderr" 2>&1 || return 1
    for _ in $(seq 50); do [ -S "$dir/zserv.api" ] && break; sleep 0.1; done
    LAB_PIDS+=("$(cat "$dir/zebra.pid")")
    in_ns "$n" /usr/lib/frr/bfdd -f "$dir/frr.conf" -i "$dir/bfdd.pid" -z "$dir/zserv.api" --bfdctl "$dir/bfdd.sock" \
        --vty_socket "$dir" -P 0 -d >"$dir/bfdd.stderr" 2>&1 || return 1
    for _ in $(seq 50); do [ -s "$dir/bfdd.pid" ] && break; sleep 0.1; done
    LAB_PIDS+=("$(cat "$dir/bfdd.pid")")
}
vtysh_() { local name=$1; shift; vtysh --vty_socket "$LAB_WORK/$name" "$@"; }
frr_up() { vtysh_ frr -c 'show bfd peers brief' | grep -qi " up "; }
# FRR shows the diagnostic it set: "neighbor signaled session down" after our AdminDown.
frr_down() { vtysh_ frr -c 'show bfd peers' | grep -qi "Diagnostics: neighbor signaled session down"; }
frr_slow() { vtysh_ frr -c 'show bfd peers' | grep -A4 "Remote timers" | grep -q "Receive interval: 600ms"; }
status_has() { last_status | grep -q "$1"; }

# cut_path / restore_path KIND: the single-hop veth goes down; the multihop router drops everything.
cut_path() {
    if [ "$1" != multihop ]; then
        ip -n "$(ns b)" link set e-a down
    else
        ip netns exec "$(ns r)" nft -f - <<EOF
table inet bfdcut {
  chain cut { type filter hook forward priority 0; policy drop; }
}
EOF
    fi
}
restore_path() {
    if [ "$1" != multihop ]; then
        ip -n "$(ns b)" link set e-a up
    else
        ip netns exec "$(ns r)" nft delete table inet bfdcut
    fi
}

# run_case NAME ROUTER(bird|frr) KIND(single|single6|multihop)
run_case() {
    local name=$1 router=$2 kind=$3 mh_flag=() n
    bfd_topology "$kind"
    [ "$kind" = multihop ] && mh_flag=(--multihop)
    # Single hop: the local address arrives only after bfd_peer started (as on a TUN that comes up
    # with its tunnel), which the IP_FREEBIND sockets must survive.
    [ "$kind" != multihop ] && ip -n "$(ns a)" addr del "$A_ADDR/$A_PREFIX" dev e-b
    if [ "$router" = bird ]; then
        bird_bfd b bird "$B_ADDR" "$A_ADDR" "$([ "$kind" = multihop ] && echo on || echo off)" \
            || { fail "$name: bird did not start"; lab_cleanup; return; }
    else
        frr_bfd b frr "$B_ADDR" "$A_ADDR" "$([ "$kind" = multihop ] && echo yes || echo no)" \
            || { fail "$name: bfdd did not start"; lab_cleanup; return; }
    fi
    bfd_peer_start "${mh_flag[@]}"
    if [ "$kind" != multihop ]; then
        sleep 1.5
        # shellcheck disable=SC2046 # nodad or nothing
        ip -n "$(ns a)" addr add "$A_ADDR/$A_PREFIX" dev e-b $([ "$kind" = single6 ] && echo nodad)
    fi
    if ! wait_event 1 up 15; then
        fail "$name: no Up within 15 s; last status: $(last_status)"; lab_cleanup; return
    fi
    if ! wait_for 5 "${router}_up"; then
        fail "$name: bfd_peer is Up but the $router side is not"; lab_cleanup; return
    fi
    # The status a moment later, once the Poll sequences for the fast rate are done.
    sleep 2
    local st; st=$(last_status)
    echo "  up: $(echo "$st" | grep -o '"txIntervalMs":[0-9]*'), $(echo "$st" | grep -o '"detectionTimeMs":[0-9]*')"

    # New timers through a Poll sequence (RFC 5880 §6.8.3): the peer adopts them, nobody goes down.
    n=$(events)
    peer_cmd interval 600
    if ! wait_for 5 "${router}_slow" || ! wait_for 3 status_has '"detectionTimeMs":1800'; then
        fail "$name: the peer did not adopt 600 ms timers; status: $(last_status)"; lab_cleanup; return
    fi
    peer_cmd interval "$INTERVAL_MS"
    if ! wait_for 5 status_has "\"detectionTimeMs\":$((INTERVAL_MS * MULT))" || [ "$(events)" != "$n" ]; then
        fail "$name: timers did not return to $INTERVAL_MS ms without a state change; status: $(last_status)"; lab_cleanup; return
    fi
    echo "  timers changed to 600 ms and back with Poll sequences, the session stayed Up"

    # Cut the path: Down within detection time + margin.
    n=$(( $(events) + 1 ))
    local t0; t0=$(date +%s%3N)
    cut_path "$kind"
    if ! wait_event "$n" down 5; then
        fail "$name: no Down within 5 s of cutting the path"; restore_path "$kind"; lab_cleanup; return
    fi
    local t1 diag ms
    t1=$(nth_event "$n" | field unixMs); diag=$(nth_event "$n" | field diagnostic)
    ms=$(( t1 - t0 ))
    if [ "$ms" -ge "$DOWN_LIMIT_MS" ] || [ "$diag" != DetectionTimeExpired ]; then
        fail "$name: Down after $ms ms with $diag (want < $DOWN_LIMIT_MS ms, DetectionTimeExpired)"; restore_path "$kind"; lab_cleanup; return
    fi
    echo "  path cut: Down ($diag) after $ms ms (detection time $((INTERVAL_MS * MULT)) ms)"
    restore_path "$kind"
    n=$((n + 1))
    t0=$(date +%s%3N)
    if ! wait_event "$n" up 15; then
        fail "$name: not Up again within 15 s of restoring the path"; lab_cleanup; return
    fi
    echo "  path restored: Up again after $(( $(nth_event "$n" | field unixMs) - t0 )) ms"

    # The peer shuts its session: Down with the neighbor's AdminDown.
    n=$((n + 1))
    if [ "$router" = bird ]; then
        birdc_ bird disable bfd1 >/dev/null
    else
        vtysh_ frr -c 'configure terminal' -c 'bfd' -c "$FRR_PEER" -c 'shutdown' >/dev/null
    fi
    if ! wait_event "$n" down 5; then
        fail "$name: no Down within 5 s of the peer shutting its session"; lab_cleanup; return
    fi
    diag=$(nth_event "$n" | field diagnostic)
    # BIRD 2.0 removes a disabled session without sending AdminDown (bfd_remove_session), so vgw can
    # only notice it by the detection time; FRR signals AdminDown (RFC 5880 §6.8.16).
    local want=NeighborSignaledDown
    [ "$router" = bird ] && want=DetectionTimeExpired
    if [ "$diag" != "$want" ]; then
        fail "$name: Down after the peer's shutdown carried $diag, not $want"; lab_cleanup; return
    fi
    echo "  peer shut its session: Down ($diag)"

    # The peer comes back; then vgw removes its session, and the peer hears AdminDown.
    n=$((n + 1))
    if [ "$router" = bird ]; then
        birdc_ bird enable bfd1 >/dev/null
    else
        vtysh_ frr -c 'configure terminal' -c 'bfd' -c "$FRR_PEER" -c 'no shutdown' >/dev/null
    fi
    if ! wait_event "$n" up 15 || ! wait_for 5 "${router}_up"; then
        fail "$name: not Up again after the peer re-enabled its session"; lab_cleanup; return
    fi
    n=$((n + 1))
    t0=$(date +%s%3N)
    peer_cmd remove
    local peer_ms
    if ! peer_ms=$(ms_until 3 "${router}_down"); then
        fail "$name: the $router side is not Down 3 s after vgw removed its session"; lab_cleanup; return
    fi
    if ! wait_event "$n" down 3 || [ "$(nth_event "$n" | field diagnostic)" != AdminDown ]; then
        fail "$name: bfd_peer reported no Down (AdminDown) on removing its session: $(nth_event "$n")"; lab_cleanup; return
    fi
    echo "  vgw removed its session: the $router side Down after ~$peer_ms ms (polled)"
    local dropped; dropped=$(last_status | grep -o '"dropped":[0-9]*')
    pass "$name (down in $ms ms; $dropped)"
    lab_cleanup
}

case_bird_single() { run_case "BIRD 2 single hop" bird single; }
case_bird_multihop() { run_case "BIRD 2 multihop through a router" bird multihop; }
case_frr_single() { run_case "FRR bfdd single hop" frr single; }
case_frr_multihop() { run_case "FRR bfdd multihop through a router" frr multihop; }
case_bird_single6() { run_case "BIRD 2 single hop over IPv6" bird single6; }
case_frr_single6() { run_case "FRR bfdd single hop over IPv6" frr single6; }

all="bird_single bird_multihop bird_single6 frr_single frr_multihop frr_single6"
# Sourced (for debugging): define the functions only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
[ -x "$BFD_PEER" ] || { echo "build it first: cargo build -p vgw-control --example bfd_peer ($BFD_PEER)"; exit 1; }
for c in ${*:-$all}; do "case_$c"; done
summary
