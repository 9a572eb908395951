#!/usr/bin/env bash
# Operator evidence against a real tunnel (vgw on the hub, strongSwan on the site):
#   metrics   - /metrics passes `promtool check metrics`; byte counters match iperf3 within 2 %
#   ike_log   - the IKE log shows a whole negotiation and holds neither the PSK nor any key
#   capture   - pcapng read by tshark: IKE/ESP on `outer`, ICMP on `inner`; a subnet filter excludes
#               the other host; MaxFileSize holds
#   doctor    - `vgw doctor --connection` names wrong PSK, proposal mismatch, peer unreachable and TS
#               mismatch, and says healthy for a good tunnel
#   doctor_remote - doctor run from another namespace (over --api-socket) reports the gateway's
#               namespace, forwarding and UDP sockets, not the caller's
#   activity_log - after create, update, reset and shared-key show, `monitor activity-log list` shows
#               each with its caller; the log survives kill -9 and holds no shared key
#   status    - the status page in headless Chromium shows the connection Connected with its bytes;
#               the screenshot goes to target/evidence/status-page.png
# Usage: tests/interop/evidence.sh [scenario ...]   (default: all; needs root, tshark, promtool, chromium)
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swan_site.sh"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${EVIDENCE_OUT:-$ROOT/target/evidence}"
mkdir -p "$OUT"
METRICS=127.0.0.1:9464

# lab_up [MODE]: the standard lab with a Connected tunnel and the metrics listener on (in the hub).
lab_up() {
    lab_topology
    LAB_VGW_ARGS="--metrics-listen $METRICS" lab_vgw hub hub || return 1
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site || return 1
    hub_conf "${1:-Default}"
    wait_for 10 is_connected hub to-site && wait_for 5 traffic_ok
}

scrape() { in_ns hub curl -sf "http://$METRICS/metrics"; }
# counter NAME: the value of NAME for connection to-site.
counter() { scrape | awk -v n="$1" 'index($0, n "{") == 1 && /connection_name="to-site"/ { printf "%d\n", $2 }'; }

# within_2pct ACTUAL EXPECTED
within_2pct() { python3 -c "import sys; a, e = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if e > 0 and abs(a - e) / e <= 0.02 else 1)" "$1" "$2"; }

# udp_run ARGS...: an iperf3 UDP run of 1200-byte datagrams, sitelan -> hublan; prints its JSON
# (retried when iperf3 itself fails). 30 Mbit/s: slow enough that nothing is lost outside vgw on a
# loaded 2-core machine, where iperf3 would count losses the gateway never saw.
udp_run() {
    local try out
    for try in 1 2 3; do
        in_ns hublan iperf3 -s -1 -D >/dev/null 2>&1
        sleep 0.3
        out=$(in_ns sitelan iperf3 -c 10.2.0.10 -u -l 1200 -b "${UDP_RATE:-30M}" -t 3 -J "$@" 2>/dev/null)
        if echo "$out" | python3 -c 'import json,sys; json.load(sys.stdin)["end"]["sum"]["packets"]' 2>/dev/null; then
            echo "$out"
            return 0
        fi
        for p in $(ip netns pids "$(ns hublan)"); do
            [ "$(cat "/proc/$p/comm" 2>/dev/null)" = iperf3 ] && kill "$p" 2>/dev/null
        done
        sleep 1
    done
    echo "$out"
}

scenario_metrics() {
    local name="metrics: promtool accepts /metrics; byte counters match iperf3 within 2 %"
    lab_up || { fail "$name: tunnel did not come up"; lab_cleanup; return; }
    scrape >"$OUT/metrics.txt"
    local lint; lint=$(promtool check metrics <"$OUT/metrics.txt" 2>&1)
    if [ $? -ne 0 ]; then fail "$name: promtool: $lint"; lab_cleanup; return; fi
    # Site -> hub: hub's ingress counts each received datagram as 1200 + 8 (UDP) + 20 (IPv4) bytes.
    local in0 in1 out0 out1 json got sent
    in0=$(counter vgw_tunnel_ingress_bytes_total)
    json=$(udp_run)
    sleep 0.5
    in1=$(counter vgw_tunnel_ingress_bytes_total)
    got=$(echo "$json" | python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum"]; print((s["packets"] - s["lost_packets"]) * 1228)')
    # Hub -> site (-R): hub's egress counts what it sealed: every datagram iperf3 sent.
    out0=$(counter vgw_tunnel_egress_bytes_total)
    json=$(udp_run -R)
    sleep 0.5
    out1=$(counter vgw_tunnel_egress_bytes_total)
    sent=$(echo "$json" | python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum"]; print(s["packets"] * 1228)')
    if within_2pct $((in1 - in0)) "$got" && within_2pct $((out1 - out0)) "$sent"; then
        pass "$name (ingress $((in1 - in0)) B vs iperf3 $got B; egress $((out1 - out0)) B vs iperf3 $sent B)"
    else
        fail "$name: ingress $((in1 - in0)) B vs iperf3 $got B; egress $((out1 - out0)) B vs iperf3 $sent B"
    fi
    lab_cleanup
}

# Hex strings of every key strongSwan logged (ike/chd level 4 dumps), 8-byte windows, lower case.
charon_key_windows() {
    python3 - "$1" <<'EOF'
import re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
keys, current = [], None
for line in lines:
    if re.search(r"(secret|key) => \d+ bytes", line):
        current = []
        keys.append(current)
        continue
    m = re.match(r"^.*?\s+\d+: ((?:[0-9A-F]{2} ){1,16})", line)
    if current is not None and m:
        current.extend(m.group(1).split())
    else:
        current = None
for k in keys:
    h = "".join(k).lower()
    for i in range(0, max(len(h) - 16, 0) + 1, 16):
        if len(h[i:i + 16]) == 16:
            print(h[i:i + 16])
EOF
}

scenario_ike_log() {
    local name="IKE log: a whole negotiation, no PSK and no key in any log"
    CHARON_IKE_LOG=4 CHARON_CHD_LOG=4 lab_up || { fail "$name: tunnel did not come up"; lab_cleanup; return; }
    local log; log=$(vgwc hub logs --category IKEDiagnosticLog)
    local missing=""
    for step in "with KE" "established keys" "authenticated with PSK" "Child SA [0-9a-f]*_i"; do
        echo "$log" | grep -q "$step" || missing="$missing $step"
    done
    local windows; windows=$(charon_key_windows "$LAB_WORK/site/charon.log")
    local nkeys; nkeys=$(echo "$windows" | grep -c . || true)
    local leaks=""
    cat "$LAB_WORK"/hub-state/logs/* "$LAB_WORK/hub.log" >"$LAB_WORK/all-logs.txt" 2>/dev/null
    tr -d ' :' <"$LAB_WORK/all-logs.txt" | tr 'A-F' 'a-f' >"$LAB_WORK/all-logs.hex"
    grep -qF "$PSK" "$LAB_WORK/all-logs.txt" && leaks="$leaks PSK"
    if [ "$nkeys" -gt 0 ] && echo "$windows" | grep -qF -f - "$LAB_WORK/all-logs.hex"; then leaks="$leaks key-material"; fi
    if [ -z "$missing" ] && [ -z "$leaks" ] && [ "$nkeys" -ge 8 ]; then
        pass "$name (checked $nkeys key fragments from strongSwan's key dumps)"
    else
        fail "$name: missing [$missing] leaks [$leaks] key fragments $nkeys"
    fi
    lab_cleanup
}

# tshark_rows FILE: "interface protocol src dst" per packet.
tshark_rows() { tshark -r "$1" -T fields -E separator=' ' -e frame.interface_name -e _ws.col.Protocol -e ip.src -e ip.dst 2>/dev/null; }

scenario_capture() {
    local name="packet capture: tshark sees IKE/ESP outside and ICMP inside; filters and MaxFileSize hold"
    lab_topology
    LAB_VGW_ARGS="--metrics-listen $METRICS" lab_vgw hub hub || { fail "$name: setup"; lab_cleanup; return; }
    ip -n "$(ns hublan)" addr add 10.2.0.11/24 dev e-hub
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site || { fail "$name: setup"; lab_cleanup; return; }
    # 1. Gateway-wide, no filter, started before the tunnel exists: the whole negotiation is in it.
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses "$VGW_IP" --vnet-address-space 10.2.0.0/16 -o none
    vgwc hub vnet-gateway packet-capture start -o none || { fail "$name: start failed"; lab_cleanup; return; }
    vgwc hub local-gateway create -n site --gateway-ip-address "$SITE_IP" --local-address-prefixes 10.1.0.0/16 -o none
    vgwc hub vpn-connection create -n to-site --local-gateway2 site --shared-key "$PSK" -o none
    wait_for 10 is_connected hub to-site && wait_for 5 traffic_ok || { fail "$name: tunnel did not come up"; lab_cleanup; return; }
    in_ns sitelan ping -c 3 -i 0.2 10.2.0.10 >/dev/null
    vgwc hub vnet-gateway packet-capture stop --output-file "$OUT/capture-all.pcapng" -o none || { fail "$name: stop failed"; lab_cleanup; return; }
    local rows; rows=$(tshark_rows "$OUT/capture-all.pcapng")
    local problems=""
    echo "$rows" | grep -q '^outer ISAKMP 198.18.0.2 198.18.0.1' || problems="$problems no-outer-IKE"
    echo "$rows" | grep -q '^outer ESP 198.18.0.1 198.18.0.2' || problems="$problems no-outer-ESP"
    echo "$rows" | grep -q '^inner ICMP 10.1.0.10 10.2.0.10' || problems="$problems no-inner-ICMP"
    # 2. Connection capture with a filter on one host: the other host's pings stay out.
    vgwc hub vpn-connection packet-capture start -n to-site -o none \
        --filter-data '{"TracingFlags": 8, "Filters": [{"SourceSubnets": ["10.1.0.10/32"], "DestinationSubnets": ["10.2.0.10/32"]}]}' \
        || problems="$problems filter-start"
    in_ns sitelan ping -c 3 -i 0.2 10.2.0.10 >/dev/null
    in_ns sitelan ping -c 3 -i 0.2 10.2.0.11 >/dev/null
    vgwc hub vpn-connection packet-capture stop -n to-site --output-file "$OUT/capture-filtered.pcapng" -o none || problems="$problems filter-stop"
    rows=$(tshark_rows "$OUT/capture-filtered.pcapng")
    echo "$rows" | grep -q '^inner ICMP 10.1.0.10 10.2.0.10' || problems="$problems filtered-missing-10.2.0.10"
    echo "$rows" | grep -q '10.2.0.11' && problems="$problems filter-leaked-10.2.0.11"
    echo "$rows" | grep -q '^outer' && problems="$problems filter-kept-outer"
    # 3. MaxFileSize 1 MB while 3 s of 30 Mbit/s (11 MB) cross the tunnel: a ring of the newest packets.
    vgwc hub vnet-gateway packet-capture start --filter-data '{"MaxFileSize": 1}' -o none || problems="$problems ring-start"
    udp_run >/dev/null
    local answer; answer=$(vgwc hub vnet-gateway packet-capture stop --output-file "$OUT/capture-ring.pcapng" -o json)
    local size; size=$(stat -c %s "$OUT/capture-ring.pcapng" 2>/dev/null || echo 0)
    local dropped; dropped=$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["packetsDroppedForMaxFileSize"])')
    [ "$size" -gt 0 ] && [ "$size" -le 1048576 ] || problems="$problems ring-size-$size"
    [ "$dropped" -gt 0 ] || problems="$problems ring-never-wrapped"
    tshark -r "$OUT/capture-ring.pcapng" -c 1 >/dev/null 2>&1 || problems="$problems ring-unreadable"
    if [ -z "$problems" ]; then
        pass "$name (ring file $size bytes, $dropped old packets dropped)"
    else
        fail "$name:$problems"; echo "$rows" | head -20
    fi
    lab_cleanup
}

# doctor_says TEXT: doctor (run in the hub's namespace) exits non-zero and prints TEXT.
doctor_output() { in_ns hub env VGW_API_SOCKET="$LAB_WORK/hub.sock" "$VGW" doctor --connection to-site --state-dir "$LAB_WORK/hub-state" 2>&1; }

doctor_case() { # NAME TEXT SETUP...
    local name=$1 text=$2; shift 2
    lab_topology
    lab_vgw hub hub || { fail "doctor $name: setup"; lab_cleanup; return; }
    "$@"
    local out rc=0
    wait_for 12 sh -c "VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vpn-connection show -n to-site --query connectionStatusReason -o tsv | grep -q ." || true
    sleep 2
    out=$(doctor_output) || rc=$?
    if [ "$rc" -ne 0 ] && echo "$out" | grep -q "$text"; then
        pass "doctor names '$text' for $name"
    else
        fail "doctor $name (exit $rc):"; echo "$out"
    fi
    lab_cleanup
}

setup_wrong_psk() { SITE_PSK=NotTheSameKey site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none; lab_charon site site; hub_conf Default; }
setup_proposals() {
    site_conf aes128-sha1-modp2048 aes128-sha1 none; lab_charon site site
    hub_conf Default --ike-encryption GCMAES256 --ike-integrity SHA384 --dh-group ECP384 --ipsec-encryption GCMAES256 --ipsec-integrity GCMAES256 --pfs-group None
}
setup_unreachable() { hub_conf Default; }   # nothing answers at the site
setup_ts() { SITE_TS=10.5.0.0/16 site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none; lab_charon site site; hub_conf Default; }

scenario_doctor() {
    doctor_case "a wrong PSK" "wrong PSK" setup_wrong_psk
    doctor_case "disjoint proposals" "proposal mismatch" setup_proposals
    doctor_case "a silent peer" "peer unreachable" setup_unreachable
    doctor_case "mismatched traffic selectors" "TS mismatch" setup_ts
    local name="doctor says healthy for a good tunnel"
    lab_up || { fail "$name: tunnel did not come up"; lab_cleanup; return; }
    local out rc=0
    out=$(doctor_output) || rc=$?
    if [ "$rc" -eq 0 ] && echo "$out" | grep -q "to-site: healthy"; then
        pass "$name"
    else
        fail "$name (exit $rc):"; echo "$out"
    fi
    lab_cleanup
}

scenario_doctor_remote() {
    local name="doctor from outside the gateway's namespace reports the gateway's host"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup"; lab_cleanup; return; }
    lab_add_ns caller   # a fresh namespace: ip_forward 0, nothing on UDP 500
    local out rc=0 problems=""
    out=$(in_ns caller env VGW_API_SOCKET="$LAB_WORK/hub.sock" "$VGW" doctor 2>&1) || rc=$?
    echo "$out" | grep -q "host checked: gateway host .*netns $(ns hub) " || problems="$problems no-hub-netns"
    echo "$out" | grep -q "ok  .*ip-forwarding.*ip_forward = 1" || problems="$problems not-hub-forwarding"
    echo "$out" | grep -q "UDP 500 is held by vgw" || problems="$problems not-hub-udp500"
    echo "$out" | grep -q "UDP 4500 is held by vgw" || problems="$problems not-hub-udp4500"
    echo "$out" | grep -q "$(ns caller)" && problems="$problems names-caller"
    [ "$(in_ns caller cat /proc/sys/net/ipv4/ip_forward)" = 0 ] || problems="$problems caller-forwards"
    if [ -z "$problems" ] && [ "$rc" -eq 0 ]; then
        pass "$name"
    else
        fail "$name (exit $rc):$problems"; echo "$out"
    fi
    lab_cleanup
}

scenario_activity_log() {
    local name="activity log: writes and actions with their caller, durable over kill -9, no shared key"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup"; lab_cleanup; return; }
    local key=ActivityLogSecret4711 problems="" table
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses "$VGW_IP" --vnet-address-space 10.2.0.0/16 -o none
    vgwc hub local-gateway create -n site --gateway-ip-address "$SITE_IP" --local-address-prefixes 10.1.0.0/16 -o none
    vgwc hub vpn-connection create -n to-site --local-gateway2 site --shared-key "$key" -o none
    vgwc hub vpn-connection update -n to-site --dpd-timeout-seconds 30 -o none || problems="$problems update"
    vgwc hub vnet-gateway reset -n hub-gw -o none || problems="$problems reset"
    vgwc hub vpn-connection shared-key show --connection-name to-site -o none || problems="$problems shared-key"
    vgwc hub vpn-connection show -n nosuch -o none 2>/dev/null   # a read: not recorded
    vgwc hub vpn-connection create -n bad --local-gateway2 nosuch --shared-key abc -o none 2>/dev/null  # Failed
    # kill -9 the daemon, start it again on the same state directory.
    kill -9 "${LAB_PIDS[0]}"; wait "${LAB_PIDS[0]}" 2>/dev/null; LAB_PIDS=()
    rm -f "$LAB_WORK/hub.sock"
    lab_vgw hub hub || { fail "$name: restart"; lab_cleanup; return; }
    table=$(vgwc hub monitor activity-log list --offset 1h -o table)
    local user; user=$(id -un)
    for op in virtualNetworkGateways/write localNetworkGateways/write connections/write \
              virtualNetworkGateways/reset/action connections/sharedKey/read; do
        echo "$table" | grep "Microsoft.Network/$op" | grep -q "$user" || problems="$problems missing-$op"
    done
    [ "$(echo "$table" | grep -c 'Microsoft.Network/connections/write')" -ge 2 ] || problems="$problems no-update"
    echo "$table" | grep 'connections/bad' | grep -q Failed || problems="$problems no-failed-write"
    echo "$table" | grep -q 'connections/read' && problems="$problems recorded-a-read"
    local failed; failed=$(vgwc hub monitor activity-log list --offset 1h --status Failed --query 'length(@)' -o tsv)
    [ "$failed" = 1 ] || problems="$problems status-filter-$failed"
    local other; other=$(vgwc hub monitor activity-log list --offset 1h --caller nobody --query 'length(@)' -o tsv)
    [ "$other" = 0 ] || problems="$problems caller-filter-$other"
    # The shared key is in the state database (it must be), but never next to an activity entry.
    if sqlite3 "$LAB_WORK/hub-state/activity.db" 'SELECT * FROM activity_log' | grep -q "$key"; then
        problems="$problems key-in-activity-log"
    fi
    [ "$(sqlite3 "$LAB_WORK/hub-state/activity.db" 'SELECT count(*) FROM activity_log' 2>/dev/null)" -ge 6 ] || problems="$problems no-table"
    [ "$(stat -c %a "$LAB_WORK/hub-state/activity.db")" = 600 ] || problems="$problems activity-db-not-0600"
    grep -qF "$key" "$LAB_WORK"/hub-state/activity.db* && problems="$problems key-in-activity-db-file"
    grep -rqF "$key" "$LAB_WORK/hub-state/logs" "$LAB_WORK/hub.log" && problems="$problems key-in-logs"
    if [ -z "$problems" ]; then
        pass "$name ($(echo "$table" | grep -c Microsoft.Network) entries after a restart)"
    else
        fail "$name:$problems"; echo "$table"
    fi
    lab_cleanup
}

scenario_status() {
    local name="status page in headless Chromium shows to-site Connected with its bytes"
    lab_up || { fail "$name: tunnel did not come up"; lab_cleanup; return; }
    in_ns sitelan ping -c 5 -i 0.2 10.2.0.10 >/dev/null
    local dom="$OUT/status-page.html"
    if ! in_ns hub bash "$ROOT/scripts/screenshot-status-page.sh" "http://$METRICS/" "$OUT/status-page.png" >"$dom" 2>"$LAB_WORK/chromium.log"; then
        fail "$name: chromium failed: $(tail -5 "$LAB_WORK/chromium.log")"; lab_cleanup; return
    fi
    local bytes; bytes=$(vgwc hub vpn-connection show -n to-site --query ingressBytesTransferred -o tsv)
    if grep -q 'to-site' "$dom" && grep -q 'Connected' "$dom" && [ -s "$OUT/status-page.png" ] && [ "$bytes" -gt 0 ]; then
        pass "$name (screenshot $OUT/status-page.png)"
    else
        fail "$name: DOM lacks the connection or its status (see $dom)"
    fi
    lab_cleanup
}

all="metrics ike_log capture doctor doctor_remote activity_log status"
for s in ${*:-$all}; do "scenario_$s"; done
summary
