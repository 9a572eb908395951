#!/usr/bin/env bash
# Site-to-site interop between vgw and strongSwan (Debian's charon with kernel-libipsec), PSK:
#   sitelan - site (strongSwan) - internet 198.18.0.0/24 - hub (vgw) - hublan
# ipv6_outer runs the same over IPv6 outer addresses (2001:db8::1 - 2001:db8::2).
# Each scenario builds a fresh topology, checks Connected, pings both ways, moves data, and cleans up.
# Usage: tests/interop/strongswan.sh [scenario ...]   (default: all)
set -u
. "$(dirname "$0")/lib.sh"

. "$(dirname "$0")/swan_site.sh"

run_scenario() {
    local name=$1 ike=$2 esp=$3 who=$4; shift 4
    lab_topology
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    local start_action=none mode=Default
    if [ "$who" = site ]; then start_action=start; mode=ResponderOnly; fi
    site_conf "$ike" "$esp" "$start_action"
    lab_charon site site || { fail "$name: charon did not start"; lab_cleanup; return; }
    local t0; t0=$(date +%s%N)
    hub_conf "$mode" "$@"
    if ! wait_for 10 is_connected hub to-site; then
        fail "$name: not Connected ($(conn_status hub to-site)); $(vgwc hub vpn-connection show -n to-site --query lastError -o json 2>&1 | tr -d '\n ' | head -c 400)"
        lab_cleanup; return
    fi
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if ! wait_for 5 traffic_ok; then fail "$name: Connected but no ping across"; lab_cleanup; return; fi
    if [ "${BULK:-1}" = 1 ] && ! bulk_ok; then fail "$name: 100 MB TCP transfer did not arrive intact"; lab_cleanup; return; fi
    pass "$name: Connected in ${ms} ms, ping both ways$( [ "${BULK:-1}" = 1 ] && echo ', 100 MB intact')"
    lab_cleanup
}

scenario_a() { run_scenario "(a) aes256gcm16-prfsha256-ecp256/aes256gcm16, vgw initiates" aes256gcm16-prfsha256-ecp256 aes256gcm16 vgw; }
scenario_b() {
    run_scenario "(b) aes256-sha256-modp2048/aes256-sha256 PFS modp2048, vgw initiates" aes256-sha256-modp2048 aes256-sha256-modp2048 vgw \
        --ike-encryption AES256 --ike-integrity SHA256 --dh-group DHGroup14 --ipsec-encryption AES256 --ipsec-integrity SHA256 --pfs-group PFS2048
}
scenario_c() { run_scenario "(c) aes128-sha256-ecp384/aes128gcm16, strongSwan initiates" aes128-sha256-ecp384 aes128gcm16 site; }
scenario_d() { run_scenario "(d) chacha20poly1305-prfsha256-curve25519/chacha20poly1305, strongSwan initiates" chacha20poly1305-prfsha256-curve25519 chacha20poly1305 site; }

# IPv6 outer addresses (2001:db8::1 site, 2001:db8::2 hub) carrying IPv4 and IPv6 inner traffic,
# both initiation directions; the 100 MB transfer runs over IPv4 inner, then IPv6 inner.
ipv6_outer() {
    IPV6=1 VGW_IP=2001:db8::2 SITE_IP=2001:db8::1 \
        SITE_TS=10.1.0.0/16,2001:db8:1::/64 HUB_TS=10.2.0.0/16,2001:db8:2::/64 \
        SITE_SPACE="10.1.0.0/16 2001:db8:1::/64" HUB_SPACE="10.2.0.0/16 2001:db8:2::/64" \
        BULK_DST="${BULK_DST:-10.2.0.10}" run_scenario "$@"
}
scenario_ipv6_outer() {
    ipv6_outer "IPv6 outer, IPv4 inner bulk, vgw initiates" aes256gcm16-prfsha256-ecp256 aes256gcm16 vgw
    ipv6_outer "IPv6 outer, IPv4 inner bulk, strongSwan initiates" aes256gcm16-prfsha256-ecp256 aes256gcm16 site
    scenario_ipv6_outer_v6bulk
}
scenario_ipv6_outer_v6bulk() {
    BULK_DST=2001:db8:2::10 ipv6_outer "IPv6 outer, IPv6 inner bulk, vgw initiates (AES-CBC/SHA-256)" \
        aes256-sha256-modp2048 aes256-sha256-modp2048 vgw \
        --ike-encryption AES256 --ike-integrity SHA256 --dh-group DHGroup14 --ipsec-encryption AES256 --ipsec-integrity SHA256 --pfs-group PFS2048
}

# An IPv6 peer the hub has no route to: the send fails, and the reason says so (not NO_RESPONSE).
scenario_ipv6_send_error() {
    local name="IPv6 peer without a route: SEND_ERROR with the errno, not NO_RESPONSE"
    IPV6=1 lab_topology
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    VGW_IP=2001:db8::2 SITE_IP=2001:db8:99::1 hub_conf Default
    local reason=""
    for _ in $(seq 40); do
        reason=$(vgwc hub vpn-connection show -n to-site --query connectionStatusReason -o tsv 2>/dev/null)
        [ "$reason" = SEND_ERROR ] && break
        sleep 0.25
    done
    local msg; msg=$(vgwc hub vpn-connection show -n to-site --query lastError.message -o tsv 2>&1)
    if [ "$reason" = SEND_ERROR ] && echo "$msg" | grep -q errno; then
        pass "$name ($msg)"
    else
        fail "$name: reason '$reason', lastError '$msg'"
    fi
    lab_cleanup
}

scenario_nat() { NAT=1 SITE_LOCAL=198.19.0.1 run_scenario "NAT in front of the site (masquerade), strongSwan initiates over UDP 4500" aes256gcm16-prfsha256-ecp256 aes256gcm16 site; }

scenario_wrong_psk() {
    local name="wrong PSK gives AUTHORIZATION_ERROR"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    SITE_PSK=NotTheSameKey site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    hub_conf Default
    if wait_for 10 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vpn-connection show -n to-site --query connectionStatusReason -o tsv)\" = AUTHORIZATION_ERROR ]" \
        && [ "$(conn_status hub to-site)" = NotConnected ] \
        && vgwc hub logs --category IKEDiagnosticLog | grep -q AUTHENTICATION_FAILED; then
        pass "$name (and the IKE log names AUTHENTICATION_FAILED)"
    else
        fail "$name: $(vgwc hub vpn-connection show -n to-site --query '{s:connectionStatus,r:connectionStatusReason}' -o json | tr -d '\n ')"
    fi
    if grep -q "$PSK" "$LAB_WORK"/hub-state/logs/* "$LAB_WORK/hub.log" 2>/dev/null; then fail "a shared key appears in vgw's logs"; fi
    lab_cleanup
}

scenario_proposal_mismatch() {
    local name="disjoint proposals give NEGOTIATION_FAILURE with both lists"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    hub_conf ResponderOnly --ike-encryption GCMAES256 --ike-integrity SHA384 --dh-group ECP384 --ipsec-encryption GCMAES256 --ipsec-integrity GCMAES256 --pfs-group None
    site_conf aes128-sha1-modp2048 aes128-sha1 start
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    if wait_for 10 sh -c "VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vpn-connection show -n to-site --query lastError.message -o tsv | grep -q 'AES_CBC_128.*AES_GCM_16_256'" \
        && [ "$(vgwc hub vpn-connection show -n to-site --query connectionStatusReason -o tsv)" = NEGOTIATION_FAILURE ] \
        && vgwc hub logs --category IKEDiagnosticLog | grep -q NO_PROPOSAL_CHOSEN; then
        pass "$name: $(vgwc hub vpn-connection show -n to-site --query lastError.message -o tsv)"
    else
        fail "$name: $(vgwc hub vpn-connection show -n to-site --query '{s:connectionStatus,r:connectionStatusReason,e:lastError}' -o json | tr -d '\n')"
    fi
    kill -0 "${LAB_PIDS[0]}" 2>/dev/null || fail "vgw died"
    lab_cleanup
}

scenario_rekey() {
    local name="rekey: child 30 s, IKE 60 s, 3 minutes of pings at 10/s"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16-ecp256 start "rekey_time = 30s
                life_time = 40s" "rekey_time = 60s
        reauth_time = 0"
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    hub_conf ResponderOnly
    wait_for 10 is_connected hub to-site || { fail "$name: not Connected"; lab_cleanup; return; }
    local secs=${REKEY_SECONDS:-180}
    local count=$((secs * 10))
    local out; out=$(in_ns sitelan ping -q -i 0.1 -c "$count" -W 1 10.2.0.10 2>&1 | grep 'packets transmitted')
    local lost=$(( count - $(echo "$out" | sed -E 's/.* ([0-9]+) received.*/\1/') ))
    local child ike; child=$(vgwc hub vpn-connection show -n to-site --query childSaRekeys -o tsv); ike=$(vgwc hub vpn-connection show -n to-site --query ikeSaRekeys -o tsv)
    if [ "$child" -ge $((secs / 40)) ] && [ "$ike" -ge $((secs / 70)) ] && [ "$lost" -le $((child + ike)) ] && is_connected hub to-site; then
        pass "$name: $child Child SA and $ike IKE SA rekeys, $lost of $count pings lost"
    else
        fail "$name: child rekeys $child, IKE rekeys $ike, lost $lost of $count ($out)"
    fi
    lab_cleanup
}

# Volume lifetime (saDataSizeKilobytes, RFC 4301 §4.4.2.1): 100 MB through SAs limited to 20 MB. vgw
# must rekey each SA when the data plane sees it near the limit (before, a tunnel stopped carrying
# traffic after the limit while IKE still said Connected).
scenario_volume_rekey() {
    local name="volume rekey: 100 MB through Child SAs limited to 20 MB (saDataSizeKilobytes 20480)"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 start
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    hub_conf ResponderOnly --ike-encryption GCMAES256 --ike-integrity SHA256 --dh-group ECP256 \
        --ipsec-encryption GCMAES256 --ipsec-integrity GCMAES256 --pfs-group None --sa-max-size 20480
    wait_for 10 is_connected hub to-site || { fail "$name: not Connected"; lab_cleanup; return; }
    if ! bulk_ok; then
        fail "$name: the transfer did not arrive intact ($(conn_status hub to-site), $(vgwc hub vpn-connection show -n to-site --query childSaRekeys -o tsv) rekeys)"
        lab_cleanup; return
    fi
    local child logged
    child=$(vgwc hub vpn-connection show -n to-site --query childSaRekeys -o tsv)
    logged=$(grep -c "near its volume lifetime" "$LAB_WORK/hub.log")
    if [ "$child" -ge 4 ] && [ "$logged" -ge 4 ] && wait_for 5 traffic_ok; then
        pass "$name: intact, $child Child SA rekeys ($logged started by volume), still passing traffic"
    else
        fail "$name: $child Child SA rekeys, $logged started by volume"
    fi
    lab_cleanup
}

scenario_dead_peer() {
    local name="dead peer: strongSwan killed, PEER_DEAD within dpdTimeoutSeconds + 5 s, back after restart"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 start "" "dpd_delay = 0"
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    DPD=15 hub_conf Default
    wait_for 10 is_connected hub to-site || { fail "$name: not Connected"; lab_cleanup; return; }
    local charon_pid=${LAB_PIDS[-1]}
    for pid in $(ip netns pids "$(ns site)"); do kill -9 "$pid"; done
    wait "$charon_pid" 2>/dev/null
    local t0; t0=$(date +%s)
    if wait_for 25 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vpn-connection show -n to-site --query connectionStatusReason -o tsv)\" = PEER_DEAD ]"; then
        local took=$(( $(date +%s) - t0 ))
        lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
        if wait_for 30 is_connected hub to-site && wait_for 5 traffic_ok; then
            pass "$name: dead after ${took} s (timeout 15 s), re-established"
        else
            fail "$name: did not come back after the restart"
        fi
    else
        fail "$name: $(conn_status hub to-site) $(vgwc hub vpn-connection show -n to-site --query connectionStatusReason -o tsv)"
    fi
    lab_cleanup
}

scenario_policy_based() {
    local name="policy-based selectors: two prefix pairs, two Child SAs, each passing only its own traffic"
    lab_topology
    in_ns sitelan ip addr add 10.1.1.10/24 dev e-site
    in_ns hublan ip addr add 10.2.1.10/24 dev e-hub
    # strongSwan installs each Child SA's route with a source address inside its local selector.
    in_ns site ip addr add 10.1.1.1/24 dev e-sitelan
    in_ns hub ip addr add 10.2.1.1/24 dev e-hublan
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    mkdir -p "$LAB_WORK/site"
    cat >"$LAB_WORK/site/swanctl.conf" <<EOF
connections {
    hub {
        version = 2
        local_addrs = $SITE_IP
        remote_addrs = $VGW_IP
        proposals = aes256gcm16-prfsha256-ecp256
        local { auth = psk
                id = $SITE_IP }
        remote { auth = psk
                 id = $VGW_IP }
        children {
            one { local_ts = 10.1.0.0/24
                  remote_ts = 10.2.0.0/24
                  esp_proposals = aes256gcm16
                  start_action = start }
            two { local_ts = 10.1.1.0/24
                  remote_ts = 10.2.1.0/24
                  esp_proposals = aes256gcm16
                  start_action = start }
        }
    }
}
secrets { ike-hub { id-1 = $SITE_IP
                    id-2 = $VGW_IP
                    secret = "$PSK" } }
EOF
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses $VGW_IP --vnet-address-space 10.2.0.0/24 10.2.1.0/24 -o none
    vgwc hub local-gateway create -n site --gateway-ip-address $SITE_IP --local-address-prefixes 10.1.0.0/24 10.1.1.0/24 -o none
    # One Child SA per trafficSelectorPolicies entry (set through the API; the CLI has no flag for them).
    python3 - "$LAB_WORK/hub.sock" "$PSK" <<'PY'
import json, socket, sys
body = json.dumps({
    "localNetworkGateway2": "site", "sharedKey": sys.argv[2], "connectionMode": "ResponderOnly",
    "usePolicyBasedTrafficSelectors": True,
    "trafficSelectorPolicies": [
        {"localAddressRanges": ["10.2.0.0/24"], "remoteAddressRanges": ["10.1.0.0/24"]},
        {"localAddressRanges": ["10.2.1.0/24"], "remoteAddressRanges": ["10.1.1.0/24"]},
    ],
}).encode()
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"PUT /api/connections/to-site HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
resp = s.recv(65536).decode()
assert " 201 " in resp.split("\r\n")[0], resp
PY
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    if wait_for 10 sh -c "swanctl --list-sas --uri unix://$LAB_WORK/site/charon.vici | grep -c INSTALLED | grep -q 2" \
        && wait_for 5 in_ns sitelan ping -c 1 -W 1 -I 10.1.0.10 10.2.0.10 \
        && wait_for 5 in_ns sitelan ping -c 1 -W 1 -I 10.1.1.10 10.2.1.10 \
        && ! in_ns sitelan ping -c 2 -W 1 -I 10.1.0.10 10.2.1.10 >/dev/null 2>&1; then
        pass "$name"
    else
        fail "$name: $(swan site --list-sas 2>&1 | head -20)"
    fi
    lab_cleanup
}

scenario_operations() {
    local name="operations: vpn-connection reset re-establishes, vnet-gateway reset keeps config, delete sends DELETE"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    hub_conf Default
    wait_for 10 is_connected hub to-site || { fail "$name: not Connected"; lab_cleanup; return; }
    local first; first=$(swan site --list-sas | grep -o '[0-9a-f]\{16\}_i' | head -1)
    vgwc hub vpn-connection reset -n to-site -o none
    if ! wait_for 10 sh -c "swanctl --list-sas --uri unix://$LAB_WORK/site/charon.vici | grep -q ESTABLISHED && ! swanctl --list-sas --uri unix://$LAB_WORK/site/charon.vici | grep -q $first" \
        || ! wait_for 10 is_connected hub to-site || ! wait_for 5 traffic_ok; then
        fail "$name: reset did not re-establish a new IKE SA"; lab_cleanup; return
    fi
    vgwc hub vnet-gateway reset -o none
    if ! wait_for 10 is_connected hub to-site || ! wait_for 5 traffic_ok; then
        fail "$name: vnet-gateway reset did not come back"; lab_cleanup; return
    fi
    [ "$(vgwc hub local-gateway list --query 'length(@)' -o tsv)" = 1 ] || { fail "$name: configuration changed"; lab_cleanup; return; }
    vgwc hub vpn-connection delete -n to-site
    if wait_for 5 sh -c "! swanctl --list-sas --uri unix://$LAB_WORK/site/charon.vici | grep -q ESTABLISHED"; then
        pass "$name"
    else
        fail "$name: strongSwan still has the IKE SA after the delete"
    fi
    lab_cleanup
}

# child_deleted (issue 19): strongSwan deletes its only Child SA and keeps the IKE SA (`swanctl --terminate
# --child`, as when it fails to install a route). Within 1 s vgw leaves Connected with the reason
# CHILD_SA_DELETED_BY_PEER; it re-creates the Child SA with CREATE_CHILD_SA on the same IKE SA and traffic
# flows again within 10 s, with no operator action.
scenario_child_deleted() {
    local name="peer deletes its only Child SA: vgw leaves Connected at once and re-creates it"
    lab_topology
    lab_vgw hub hub || { fail "$name: setup failed"; lab_cleanup; return; }
    site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site || { fail "$name: setup failed"; lab_cleanup; return; }
    hub_conf Default
    wait_for 10 is_connected hub to-site && wait_for 5 traffic_ok || { fail "$name: not Connected"; lab_cleanup; return; }
    local ike; ike=$(swan site --list-sas | grep -o '[0-9a-f]\{16\}_i' | head -1)
    status_pair() { vgwc hub vpn-connection show -n to-site --query '[connectionStatus, connectionStatusReason]' -o tsv | tr '\t\n' '  ' | sed 's/ *$//'; }
    left_connected() { case "$(status_pair)" in "Connecting CHILD_SA_DELETED_BY_PEER" | "NotConnected CHILD_SA_DELETED_BY_PEER") return 0 ;; esac; return 1; }
    local t0 left state back
    t0=$(date +%s%N)
    swan site --terminate --child net --timeout 5 >"$LAB_WORK/terminate.log" 2>&1 &
    local term=$!
    if ! left=$(ms_until 3 left_connected); then
        wait $term; fail "$name: still $(status_pair) 3 s after the peer deleted its Child SA"; lab_cleanup; return
    fi
    state=$(status_pair)
    left=$(( ($(date +%s%N) - t0) / 1000000 ))
    wait $term
    if ! back=$(ms_until 10 traffic_ok); then
        fail "$name: no traffic 10 s after the DELETE ($(status_pair); strongSwan: $(swan site --list-sas | tr '\n' ' ' | head -c 300))"; lab_cleanup; return
    fi
    back=$(( ($(date +%s%N) - t0) / 1000000 ))
    local reason; reason=$(vgwc hub vpn-connection show -n to-site --query '[lastError.reason, lastError.notify]' -o tsv | tr '\t\n' '  ' | sed 's/ *$//')
    if [ "$left" -le 1000 ] && [ "$back" -le 10000 ] && is_connected hub to-site && [ "$reason" = "CHILD_SA_DELETED_BY_PEER DELETE" ] \
        && swan site --list-sas | grep -q "$ike"; then
        pass "$name: $state after $left ms, traffic again after $back ms on the same IKE SA"
    else
        fail "$name: left Connected after $left ms ($state), traffic after $back ms, lastError [$reason], IKE SA ${ike} kept: $(swan site --list-sas | grep -c "$ike")"
    fi
    lab_cleanup
}

all="a b c d ipv6_outer ipv6_send_error nat wrong_psk proposal_mismatch policy_based operations child_deleted volume_rekey dead_peer rekey"
for s in ${*:-$all}; do "scenario_$s"; done
summary
