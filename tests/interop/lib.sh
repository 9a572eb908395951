# Shared helpers for vgw's interop tests: network namespaces, a vgw daemon and strongSwan's charon
# (kernel-libipsec: userspace ESP over TUN, since this kernel has no ESP) inside them.
#
# Every name carries the test's prefix and pid; `lab_cleanup` (on EXIT/INT/TERM) kills what was started
# and deletes the namespaces. Only 198.18.0.0/15 ("internet"), 10.x and (IPV6=1) 2001:db8::/32 inside namespaces
# are used.
# shellcheck shell=bash

LAB_PREFIX="${LAB_PREFIX:-vi}$$"
LAB_WORK="$(mktemp -d "${TMPDIR:-/tmp}/vgw-interop.XXXXXX")"
LAB_NS=()
LAB_PIDS=()
VGW="${VGW:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/debug/vgw}"
PASSED=0
FAILED=0

lab_cleanup() {
    for pid in "${LAB_PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
    sleep 0.2
    for ns in "${LAB_NS[@]:-}"; do
        [ -n "$ns" ] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    LAB_NS=()
    LAB_PIDS=()
    rm -f "$LAB_WORK"/*.sock "$LAB_WORK"/*/charon.vici
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$LAB_WORK"/*-state
}

lab_finish() {
    lab_cleanup
    if [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$LAB_WORK"; fi
}
trap lab_finish EXIT
trap 'exit 130' INT TERM

ns() { echo "$LAB_PREFIX-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

lab_add_ns() {
    local n; n=$(ns "$1")
    ip netns add "$n"
    LAB_NS+=("$n")
    ip -n "$n" link set lo up
    if [ "${2:-}" = router ]; then
        ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
        ip netns exec "$n" sysctl -qw net.ipv6.conf.all.forwarding=1
    fi
}

# lab_link A ADDR_A B ADDR_B
lab_link() {
    local a=$1 aa=$2 b=$3 ba=$4
    local ia="e-${b:0:12}" ib="e-${a:0:12}"
    ip link add "$ia" netns "$(ns "$a")" type veth peer name "$ib" netns "$(ns "$b")"
    ip -n "$(ns "$a")" addr add "$aa" dev "$ia"
    ip -n "$(ns "$b")" addr add "$ba" dev "$ib"
    ip -n "$(ns "$a")" link set "$ia" up
    ip -n "$(ns "$b")" link set "$ib" up
}

# The standard site-to-site topology:
#   sitelan 10.1.0.10 - site 10.1.0.1 | 198.18.0.1 === 198.18.0.2 hub | 10.2.0.1 - hublan 10.2.0.10
# With NAT=1 a NAT box sits between site (198.19.0.1, private side) and the internet (198.18.0.1).
lab_topology() {
    lab_add_ns sitelan
    lab_add_ns site router
    lab_add_ns hub router
    lab_add_ns hublan
    lab_link sitelan 10.1.0.10/24 site 10.1.0.1/24
    lab_link hub 10.2.0.1/24 hublan 10.2.0.10/24
    if [ "${NAT:-0}" = 1 ]; then
        lab_add_ns nat router
        lab_link site 198.19.0.1/24 nat 198.19.0.254/24
        lab_link nat 198.18.0.1/24 hub 198.18.0.2/24
        ip -n "$(ns site)" route add default via 198.19.0.254
        ip netns exec "$(ns nat)" nft -f - <<EOF
table ip nat {
  chain post { type nat hook postrouting priority 100; oifname "e-hub" masquerade; }
}
EOF
    else
        lab_link site 198.18.0.1/24 hub 198.18.0.2/24
    fi
    ip -n "$(ns sitelan)" route add default via 10.1.0.1
    ip -n "$(ns hublan)" route add default via 10.2.0.1
    if [ "${IPV6:-0}" = 1 ]; then lab_ipv6; fi
}

# lab_ipv6: IPv6 beside IPv4 on the standard topology (no NAT): the internet link gets
# 2001:db8::1 (site) and 2001:db8::2 (hub), the LANs 2001:db8:1::/64 and 2001:db8:2::/64.
# nodad: the addresses are usable at once instead of after duplicate address detection.
lab_ipv6() {
    local a
    for a in "site 2001:db8::1/64 e-hub" "hub 2001:db8::2/64 e-site" \
             "sitelan 2001:db8:1::10/64 e-site" "site 2001:db8:1::1/64 e-sitelan" \
             "hub 2001:db8:2::1/64 e-hublan" "hublan 2001:db8:2::10/64 e-hub"; do
        set -- $a
        ip -n "$(ns "$1")" addr add "$2" dev "$3" nodad
    done
    ip -n "$(ns sitelan)" -6 route add default via 2001:db8:1::1
    ip -n "$(ns hublan)" -6 route add default via 2001:db8:2::1
}

# lab_vgw NS NAME: starts `vgw serve` in namespace NS; its socket is $LAB_WORK/NAME.sock.
lab_vgw() {
    local n=$1
    local name=$2
    # shellcheck disable=SC2086 # LAB_VGW_ARGS holds extra flags, e.g. --metrics-listen 127.0.0.1:9464
    ip netns exec "$(ns "$n")" "$VGW" serve --state-dir "$LAB_WORK/$name-state" --api-socket "$LAB_WORK/$name.sock" \
        ${LAB_VGW_ARGS:-} >/dev/null 2>"$LAB_WORK/$name.log" &
    LAB_PIDS+=($!)
    for _ in $(seq 100); do [ -S "$LAB_WORK/$name.sock" ] && return 0; sleep 0.05; done
    echo "vgw $name did not start:"; cat "$LAB_WORK/$name.log"; return 1
}

# vgwc NAME args...: the CLI against daemon NAME.
vgwc() { local name=$1; shift; VGW_API_SOCKET="$LAB_WORK/$name.sock" "$VGW" "$@"; }

# lab_charon NS NAME: starts charon with kernel-libipsec in NS, configured from $LAB_WORK/NAME.swanctl.conf.
lab_charon() {
    local n=$1 name=$2
    local dir="$LAB_WORK/$name"
    mkdir -p "$dir"
    rm -f "$dir/charon.vici"
    cat >"$dir/strongswan.conf" <<EOF
charon {
    # openssl first: otherwise strongSwan's generic AES/GCM are used and throughput drops ~6x.
    load = openssl random nonce pem pkcs1 x509 revocation constraints pubkey kdf curve25519 chapoly aes gcm sha1 sha2 hmac kernel-libipsec kernel-netlink socket-default vici updown ${CHARON_PLUGINS_EXTRA:-}
    install_routes = yes
    retransmit_tries = 3
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    plugins {
        vici { socket = unix://$dir/charon.vici }
        resolve { file = $dir/resolv.conf }
    }
    filelog {
        main {
            path = $dir/charon.log
            time_format = %H:%M:%S
            default = 1
            ike = ${CHARON_IKE_LOG:-2}
            chd = ${CHARON_CHD_LOG:-1}
            cfg = 2
            flush_line = yes
        }
    }
}
EOF
    ip netns exec "$(ns "$n")" unshare -m --propagation private sh -c \
        "mount -t tmpfs tmpfs /run && STRONGSWAN_CONF=$dir/strongswan.conf exec /usr/lib/ipsec/charon" \
        >/dev/null 2>"$dir/stderr.log" &
    LAB_PIDS+=($!)
    for _ in $(seq 100); do [ -S "$dir/charon.vici" ] && break; sleep 0.05; done
    [ -S "$dir/charon.vici" ] || { echo "charon $name did not start"; cat "$dir/stderr.log"; return 1; }
    swan "$name" --load-all --file "$dir/swanctl.conf" >"$dir/load.log" 2>&1 || { cat "$dir/load.log"; return 1; }
}

# swan NAME COMMAND [args...]: swanctl against charon NAME (the command must come first).
swan() { local name=$1 cmd=$2; shift 2; swanctl "$cmd" --uri "unix://$LAB_WORK/$name/charon.vici" "$@"; }

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds or the time is up.
wait_for() {
    local limit=$1; shift
    local end=$(( $(date +%s%N) + limit * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# ms_until SECONDS CMD...: prints how many ms CMD took to succeed (polling every 50 ms), or fails.
ms_until() {
    local limit=$1; shift
    local t0; t0=$(date +%s%N)
    local end=$(( t0 + limit * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        if "$@" >/dev/null 2>&1; then echo $(( ($(date +%s%N) - t0) / 1000000 )); return 0; fi
        sleep 0.05
    done
    return 1
}

conn_status() { vgwc "$1" vpn-connection show -n "$2" --query connectionStatus -o tsv; }
is_connected() { [ "$(conn_status "$1" "$2")" = Connected ]; }

pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() {
    FAILED=$((FAILED + 1)); echo "FAIL: $*"
    for f in "$LAB_WORK"/*.log "$LAB_WORK"/*/charon.log; do
        [ -f "$f" ] && { echo "--- $f (tail)"; tail -n 25 "$f"; }
    done
}

summary() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
