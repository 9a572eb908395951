#!/usr/bin/env bash
# Point-to-site scale: CLIENTS IKEv2 road warriors (strongSwan charon, kernel-libipsec, each client
# with its own certificate from `vgw pki` and `vips = 0.0.0.0`) connect to one vgw at once. Measures the
# time from the first initiation until `vpn-client show-health` counts CLIENTS connections, checks that
# allocatedIpAddresses holds CLIENTS distinct addresses inside the pool, and prints the connect rate and
# the RSS of vgw's `serve` process before and at CLIENTS clients.
#
# Debian's strongSwan has no load-tester plugin, so the clients are connections of CHARONS charon
# instances, each in its own network namespace bridged to the hub: CHARONS=1 (the default) is one charon
# holding every connection - all IKE SAs come from one address and port, which is legal IKE and far
# lighter; CHARONS=CLIENTS is one charon (one namespace, one address) per client.
#
# Usage: bash bench/p2s_clients.sh            (root, from anywhere)
# Environment: CLIENTS (default 200), CHARONS (default 1), WAIT (seconds to wait for all, default 180),
#   POOL (default 172.16.0.0/22), VGW (default target/debug/vgw; copy it first when others rebuild),
#   BENCH_IKE_LOG (charon's ike log level, default 0), KEEP_WORK=1 keeps $LAB_WORK.
set -u
cd "$(dirname "$0")/.."
. tests/interop/lib.sh

CLIENTS=${CLIENTS:-200}
CHARONS=${CHARONS:-1}
WAIT=${WAIT:-180}
POOL=${POOL:-172.16.0.0/22}
DNS=10.2.0.53
VGW_IP=198.18.0.2
[ "$CHARONS" -ge 1 ] && [ "$CHARONS" -le "$CLIENTS" ] || { echo "CHARONS must be 1..CLIENTS"; exit 2; }
[ -x "$VGW" ] || { echo "no vgw binary at $VGW (cargo build -p vgw, or set VGW)"; exit 2; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="${1:-0}" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
health() { vgwc hub vnet-gateway vpn-client show-health "$@"; }
health_count() { health --query vpnClientConnectionsCount -o tsv 2>/dev/null; }

# Topology: hub (vgw, 198.18.0.2/16 on bridge br-inet) - hublan 10.2.0.10; client namespaces c1..cK,
# each 198.18.<1 + (k-1)/250>.<1 + (k-1)%250>/16 on a veth into the bridge.
bench_topology() {
    lab_add_ns hub router
    lab_add_ns hublan
    lab_link hub 10.2.0.1/24 hublan 10.2.0.10/24
    ip -n "$(ns hublan)" route add default via 10.2.0.1
    ip -n "$(ns hub)" link add br-inet type bridge
    ip -n "$(ns hub)" addr add "$VGW_IP/16" dev br-inet
    ip -n "$(ns hub)" link set br-inet up
    local k
    for k in $(seq "$CHARONS"); do
        lab_add_ns "c$k"
        ip link add e-inet netns "$(ns "c$k")" type veth peer name "p$k" netns "$(ns hub)"
        ip -n "$(ns "c$k")" addr add "198.18.$((1 + (k - 1) / 250)).$((1 + (k - 1) % 250))/16" dev e-inet
        ip -n "$(ns "c$k")" link set e-inet up
        ip -n "$(ns hub)" link set "p$k" master br-inet up
    done
}

# Gateway with point-to-site over IKEv2, the root trusted, CLIENTS client certificates.
bench_gateway() {
    lab_vgw hub hub || return 1
    VGW_PID=${LAB_PIDS[-1]}
    grep -q serve "/proc/$VGW_PID/cmdline" 2>/dev/null || { echo "pid $VGW_PID is not vgw serve"; return 1; }
    local pki="$LAB_WORK/pki"
    mkdir -p "$pki"
    "$VGW" pki create-root --name root --out "$pki" -o json >"$pki/root.json" 2>"$pki/root.log" || return 1
    seq -f 'client%03g' "$CLIENTS" | xargs -P 2 -I{} \
        "$VGW" pki issue-client --root root --root-dir "$pki" --name {} --out "$pki" --no-p12 -o none || return 1
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses "$VGW_IP" --vnet-address-space 10.2.0.0/16 \
        --address-prefixes "$POOL" --client-protocol IkeV2 --vpn-client-dns-servers "$DNS" -o none || return 1
    local data; data=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["publicCertData"])' "$pki/root.json")
    vgwc hub vnet-gateway root-cert create --gateway-name hub-gw --name root --public-cert-data "$data" -o none || return 1
    wait_for 10 test -s "$LAB_WORK/hub-state/p2s/ca.crt.pem"
}

# client_name I: client001...
client_name() { printf 'client%03d' "$1"; }

# bench_charon K: charon for namespace cK with the clients I where (I-1) % CHARONS == K-1, credentials
# loaded, connections written to swanctl.conf but not yet loaded. Like lab_charon, with quieter logs
# (outside lib.sh's */charon.log, so `fail` does not dump hundreds of them), no routes (this measures
# the control plane) and unlimited keying tries (a client whose first attempt times out retries).
bench_charon() {
    local k=$1 dir="$LAB_WORK/c$k" i name
    mkdir -p "$dir/x509" "$dir/x509ca" "$dir/private"
    cp "$LAB_WORK/hub-state/p2s/ca.crt.pem" "$dir/x509ca/gateway-ca.crt.pem"
    {
        echo "connections {"
        for i in $(seq "$k" "$CHARONS" "$CLIENTS"); do
            name=$(client_name "$i")
            cp "$LAB_WORK/pki/$name.crt.pem" "$dir/x509/"
            cp "$LAB_WORK/pki/$name.key.pem" "$dir/private/"
            cat <<EOF
    $name {
        version = 2
        remote_addrs = $VGW_IP
        vips = 0.0.0.0
        proposals = aes256gcm16-prfsha256-ecp256
        keyingtries = 0
        local { auth = pubkey
                certs = $name.crt.pem }
        remote { auth = pubkey
                 id = $VGW_IP }
        children { hub { remote_ts = 10.2.0.0/16
                         esp_proposals = aes256gcm16
                         start_action = start } }
    }
EOF
        done
        echo "}"
    } >"$dir/swanctl.conf"
    cat >"$dir/strongswan.conf" <<EOF
charon {
    load = openssl random nonce pem pkcs1 x509 revocation constraints pubkey kdf curve25519 aes gcm sha1 sha2 hmac kernel-libipsec kernel-netlink socket-default vici
    install_routes = no
    retransmit_tries = 5
    retransmit_timeout = 2.0
    retransmit_base = 1.4
    plugins { vici { socket = unix://$dir/charon.vici } }
    filelog {
        main {
            path = $dir/charon-bench.log
            time_format = %H:%M:%S
            default = 0
            ike = ${BENCH_IKE_LOG:-0}
            cfg = 0
            flush_line = yes
        }
    }
}
EOF
    ip netns exec "$(ns "c$k")" unshare -m --propagation private sh -c \
        "mount -t tmpfs tmpfs /run && STRONGSWAN_CONF=$dir/strongswan.conf exec /usr/lib/ipsec/charon" \
        >/dev/null 2>"$dir/stderr.log" &
    LAB_PIDS+=($!)
    disown $!  # lib.sh's cleanup SIGKILLs slow ones; no "Killed" line per charon
}

# bench_charon_ready K: waits for charon cK's socket and loads its credentials.
bench_charon_ready() {
    local k=$1 dir="$LAB_WORK/c$k"
    wait_for 20 test -S "$dir/charon.vici" || { echo "charon c$k did not start: $(cat "$dir/stderr.log")"; return 1; }
    SWANCTL_DIR="$dir" swan "c$k" --load-creds --noprompt --file "$dir/swanctl.conf" >"$dir/creds.log" 2>&1 \
        || { echo "charon c$k: $(tail -3 "$dir/creds.log")"; return 1; }
}

# bench_initiate K: loading the connections starts them (start_action = start), all at once per charon.
bench_initiate() {
    local k=$1 dir="$LAB_WORK/c$k"
    SWANCTL_DIR="$dir" swan "c$k" --load-conns --file "$dir/swanctl.conf" >"$dir/conns.log" 2>&1
}

# check_addresses: CLIENTS distinct allocatedIpAddresses, all inside POOL; prints a reason when not.
check_addresses() {
    health -o json | python3 -c '
import ipaddress, json, sys
n, pool = int(sys.argv[1]), ipaddress.ip_network(sys.argv[2])
h = json.load(sys.stdin)
addrs = [a for entry in h.get("allocatedIpAddresses", []) for a in str(entry).split(",") if a]
outside = [a for a in addrs if ipaddress.ip_address(a) not in pool]
if len(addrs) != n or len(set(addrs)) != n or outside:
    print(f"{len(addrs)} addresses, {len(set(addrs))} distinct, outside the pool: {outside[:5]}")
    sys.exit(1)
users = {row.get("vpnUserName") for row in h.get("value", [])}
if len(users) != n:
    print(f"{len(users)} distinct user names in show-health")
    sys.exit(1)' "$CLIENTS" "$POOL"
}

NAME="$CLIENTS IKEv2 clients ($CHARONS charon instance(s)) get $CLIENTS distinct pool addresses within ${WAIT} s"
run() {
    local t_setup; t_setup=$(now_ms)
    bench_topology || { fail "$NAME: topology"; return; }
    bench_gateway || { fail "$NAME: gateway setup"; return; }
    local k
    for k in $(seq "$CHARONS"); do bench_charon "$k"; done
    for k in $(seq "$CHARONS"); do bench_charon_ready "$k" || { fail "$NAME: charon c$k"; return; }; done
    echo "setup: $CLIENTS certificates, $CHARONS charon(s) in $(( ($(now_ms) - t_setup) / 1000 )) s"
    sleep 1
    RSS_BEFORE=$(rss_kib "$VGW_PID")

    # Every charon loads its connections in the background (each starts as it is loaded); meanwhile
    # show-health is polled. The loaders report when they are done through $LAB_WORK/initiated.
    local t0 t_init="" t_all="" count=0 last=-1
    t0=$(now_ms)
    (
        for k in $(seq "$CHARONS"); do bench_initiate "$k" & done
        wait
        echo $(( $(now_ms) - t0 )) >"$LAB_WORK/initiated"
    ) &
    LOADER=$!
    local end=$(( t0 + WAIT * 1000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
        count=$(health_count); count=${count:-0}
        local t=$(( $(now_ms) - t0 ))  # when the answer arrived: an upper bound
        if [ "$count" != "$last" ]; then
            echo "  ${t} ms: $count connected"
            last=$count
        fi
        if [ "$count" -ge "$CLIENTS" ]; then t_all=$t; break; fi
        sleep 0.2
    done
    RSS_AT=$(rss_kib "$VGW_PID")
    wait "$LOADER"
    t_init=$(cat "$LAB_WORK/initiated" 2>/dev/null)
    sleep 5
    RSS_SETTLED=$(rss_kib "$VGW_PID")
    local count_settled; count_settled=$(health_count)

    if [ -z "$t_all" ]; then
        echo "--- c1/charon-bench.log (tail)"; tail -n 15 "$LAB_WORK/c1/charon-bench.log" 2>/dev/null
        fail "$NAME: $count of $CLIENTS connected after ${WAIT} s"
        return
    fi
    local why; why=$(check_addresses) || { fail "$NAME: $why"; return; }
    [ "${count_settled:-0}" -eq "$CLIENTS" ] || { fail "$NAME: $count_settled connected 5 s later (clients replaced each other?)"; return; }

    # The clients' side: established IKE SAs and distinct virtual IPs over all charons.
    local sas=0 vips=0 n
    for k in $(seq "$CHARONS"); do
        n=$(swan "c$k" --list-sas 2>/dev/null | grep -c ': #[0-9]*, ESTABLISHED'); sas=$((sas + n))
    done
    vips=$(for k in $(seq "$CHARONS"); do in_ns "c$k" ip -4 -o addr show; done | awk '{print $4}' | grep -c '^172\.')

    local secs rate
    secs=$(awk -v m="$t_all" 'BEGIN {printf "%.2f", m / 1000}')
    rate=$(awk -v n="$CLIENTS" -v m="$t_all" 'BEGIN {printf "%.1f", n * 1000 / m}')
    echo
    printf '%-44s %s\n' "clients" "$CLIENTS" \
        "charon instances" "$CHARONS" \
        "all connections loaded/initiated in" "$(awk -v m="${t_init:-0}" 'BEGIN {printf "%.2f s", m / 1000}')" \
        "client side: established IKE SAs / vips" "$sas / $vips" \
        "time to connect all" "$secs s" \
        "connect rate" "$rate clients/s" \
        "vgw RSS before the clients (baseline)" "$(mib "$RSS_BEFORE")" \
        "vgw RSS at $CLIENTS clients" "$(mib "$RSS_AT")" \
        "vgw RSS at $CLIENTS clients, 5 s later" "$(mib "$RSS_SETTLED")" \
        "vgw RSS per client" "$(awk -v a="$RSS_AT" -v b="$RSS_BEFORE" -v n="$CLIENTS" 'BEGIN {printf "%.1f KiB", (a - b) / n}')"
    echo
    pass "$NAME ($secs s, $rate clients/s, vgw RSS $(mib "$RSS_BEFORE") -> $(mib "$RSS_AT"))"
}

run
summary
