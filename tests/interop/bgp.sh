#!/usr/bin/env bash
# BGP over the tunnels, against real routers: BIRD 2 and FRR's bgpd on the site router behind strongSwan,
# and vgw on both ends.
#   sitelan 10.1.0.10, sitelan2 10.11.0.10 - site (charon + BIRD/FRR, peering 10.1.255.254, AS 65010)
#   - internet 198.18.0.0/24 - hub (vgw, peering 10.2.255.254, AS 65515) - hublan 10.2.0.10
# Scenarios:
#   bird, frr  - the site advertises 10.1.0.0/16, 10.11.0.0/16 and 2001:db8:1::/48; vgw learns all three
#                (origin EBgp, asPath 65010, nextHop the site's peering address), 10.11.0.10 answers pings
#                from the hub LAN, the router shows vgw's 10.2.0.0/16; a withdrawn prefix leaves vgw's
#                learned routes and the kernel within 1 s; with timers 9/3, cutting the underlay removes
#                the site's routes within 10 s and they return with the link; peer status counters grow.
#   bird_bfd   - BIRD with BFD (300 ms x 3) under the session: an underlay cut withdraws within ~1 s.
#   vgw        - the same between two vgw gateways.
#   transit    - two sites (BIRD and FRR) learn each other's prefixes through vgw, never their own.
#                FRR's echo of them (AS path with 65515) is logged by vgw as dropped, never as learned.
#   scale      - a peer advertising 10,000 prefixes stays up (the limit warns); all are learned and
#                installed; prints the time to converge and vgw's memory.
#   forged     - forged unauthenticated IKE datagrams from the site's address (RFC 7296 §2.21) leave the
#                connection Connected and BGP up with its routes; the refusals are counted.
#   child_deleted - strongSwan deletes its only Child SA: BGP over it stops and the routes leave at once;
#                vgw re-creates the Child SA and BGP, routes and traffic return.
#   reset_evidence - vgw <-> vgw with BGP: `vnet-gateway reset` leaves an evidence archive whose manifest
#                lists every part (with SHA-256 that match) and that holds the BGP peer status (Connected)
#                and the learned routes from before the reset; `--skip-evidence` takes none;
#                `collect-evidence --capture-seconds 2 --output-file F` downloads one with a packet capture.
# Usage: tests/interop/bgp.sh [scenario ...]   (default: all; root)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/swan_site.sh"

HUB_PEER=10.2.255.254
SITE_PEER=10.1.255.254

# bgp_lab: the standard topology plus sitelan2 (10.11.0.0/24) behind the site and the site's peering
# address on its loopback.
bgp_lab() {
    lab_topology
    lab_add_ns sitelan2
    lab_link sitelan2 10.11.0.10/24 site 10.11.0.1/24
    ip -n "$(ns sitelan2)" route add default via 10.11.0.1
    ip -n "$(ns site)" addr add "$SITE_PEER/32" dev lo
    # strongSwan routes each selector pair from an address of its own inside the local selector.
    ip -n "$(ns site)" addr add 2001:db8:1::1/64 dev e-sitelan nodad
}

# The site's strongSwan: route-based selectors covering its prefixes and peering address.
bgp_site_swan() {
    SITE_TS="10.1.0.0/16,10.11.0.0/16,2001:db8:1::/48" HUB_TS="10.2.0.0/16,2001:db8:2::/48" \
        site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site
}

# bgp_hub [extra local-gateway flags]: vgw with BGP to the site, timers 9/3 (HUB_SPACE: its address space).
bgp_hub() {
    # shellcheck disable=SC2086 # HUB_SPACE may list several prefixes
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses "$VGW_IP" --vnet-address-space ${HUB_SPACE:-10.2.0.0/16} \
        --asn "${HUB_ASN:-65515}" --bgp-peering-address "$HUB_PEER" -o none
    vgwc hub local-gateway create -n site --gateway-ip-address "$SITE_IP" --asn 65010 --bgp-peering-address "$SITE_PEER" \
        --bgp-hold-time 9 --bgp-keepalive 3 "$@" -o none
    # shellcheck disable=SC2086 # HUB_CONN_FLAGS holds extra connection flags, e.g. BFD's
    vgwc hub vpn-connection create -n to-site --local-gateway2 site --shared-key "$PSK" --enable-bgp ${HUB_CONN_FLAGS:-} -o none
}

# bird_start NS NAME ASN PEER_ADDR NEIGHBOR NEIGHBOR_ASN STATIC4... : BIRD 2 in NS, control socket in $LAB_WORK/NAME.
bird_start() {
    local n=$1 name=$2 asn=$3 addr=$4 nbr=$5 nbr_asn=$6; shift 6
    local dir="$LAB_WORK/$name"; mkdir -p "$dir"
    {
        echo "router id $addr;"
        echo "log \"$dir/bird.log\" all;"
        echo "protocol device { scan time 1; }"
        echo "protocol static s4 { ipv4;"
        for p in "$@"; do echo "  route $p unreachable;"; done
        echo "}"
        echo "protocol static s6 { ipv6; ${BIRD_STATIC6:-} }"
        # BIRD_BFD=MS: BFD (multihop, the BGP session's addresses) at MS ms x 3 under the session.
        [ -n "${BIRD_BFD:-}" ] && echo "protocol bfd { multihop { min rx interval $BIRD_BFD ms; min tx interval $BIRD_BFD ms; multiplier 3; }; }"
        cat <<EOF
protocol bgp hub {
  local $addr as $asn;
  neighbor $nbr as $nbr_asn;
  multihop 4;
  ${BIRD_BFD:+bfd on;}
  hold time 9; keepalive time 3;
  connect retry time 2;
  error wait time 1, 10;
  ipv4 { import all; export where proto = "s4"; next hop self; };
  ipv6 { import all; export where proto = "s6"; next hop address 2001:db8:1::1; };
}
EOF
    } >"$dir/bird.conf"
    in_ns "$n" bird -c "$dir/bird.conf" -s "$dir/bird.ctl" -P "$dir/bird.pid" || return 1
    LAB_PIDS+=("$(cat "$dir/bird.pid")")
}
birdc_() { local name=$1; shift; birdc -s "$LAB_WORK/$name/bird.ctl" "$@"; }

# frr_start NS NAME ASN PEER_ADDR NEIGHBOR NEIGHBOR_ASN NETWORK4...: FRR's bgpd (no zebra) in NS.
frr_start() {
    local n=$1 name=$2 asn=$3 addr=$4 nbr=$5 nbr_asn=$6; shift 6
    local dir="$LAB_WORK/$name"; mkdir -p "$dir"
    {
        echo "frr defaults traditional"
        echo "log file $dir/frr.log"
        echo "router bgp $asn"
        echo " bgp router-id $addr"
        echo " no bgp ebgp-requires-policy"
        echo " no bgp network import-check"
        echo " neighbor $nbr remote-as $nbr_asn"
        echo " neighbor $nbr ebgp-multihop 4"
        echo " neighbor $nbr update-source $addr"
        echo " neighbor $nbr timers 3 9"
        echo " neighbor $nbr timers connect 2"
        echo " address-family ipv4 unicast"
        for p in "$@"; do echo "  network $p"; done
        echo " exit-address-family"
        echo " address-family ipv6 unicast"
        [ -n "${FRR_NETWORK6:-}" ] && echo "  network $FRR_NETWORK6"
        echo "  neighbor $nbr activate"
        echo " exit-address-family"
    } >"$dir/frr.conf"
    in_ns "$n" /usr/lib/frr/bgpd -f "$dir/frr.conf" -i "$dir/bgpd.pid" --vty_socket "$dir" -Z -S -P 0 -d \
        >"$dir/stderr.log" 2>&1 || return 1
    for _ in $(seq 50); do [ -s "$dir/bgpd.pid" ] && break; sleep 0.1; done
    LAB_PIDS+=("$(cat "$dir/bgpd.pid")")
}
vtysh_() { local name=$1; shift; vtysh --vty_socket "$LAB_WORK/$name" "$@"; }

peer_state() { vgwc "$1" vnet-gateway list-bgp-peer-status --peer "$2" --query 'value[0].state' -o tsv; }
peer_up() { [ "$(peer_state "$1" "$2")" = Connected ]; }
# learned NAME PREFIX: the learned route for PREFIX as "origin asPath nextHop", nothing when absent.
learned() { vgwc "$1" vnet-gateway list-learned-routes --query "value[?network=='$2'] | [0].[origin, asPath, nextHop]" -o tsv 2>/dev/null | tr '\t\n' '  ' | sed 's/ *$//'; }
has_learned() { [ -n "$(learned "$1" "$2")" ]; }
no_learned() { [ -z "$(learned "$1" "$2")" ]; }
kernel_has() { [ -n "$(ip -n "$(ns "$1")" route show "$2" 2>/dev/null)" ]; }
kernel_lacks() { [ -z "$(ip -n "$(ns "$1")" route show "$2" 2>/dev/null)" ]; }

# check_site_routes ROUTER_DESC: the checks shared by the bird, frr and vgw scenarios.
check_learned_three() {
    local problems="" r
    for p in 10.1.0.0/16 10.11.0.0/16; do
        r=$(learned hub "$p")
        [ "$r" = "EBgp 65010 $SITE_PEER" ] || problems="$problems $p=[$r]"
    done
    r=$(learned hub 2001:db8:1::/48)
    case "$r" in "EBgp 65010 "*) ;; *) problems="$problems 2001:db8:1::/48=[$r]" ;; esac
    echo "$problems"
}

site_prefix_gone() { no_learned hub 10.11.0.0/16 && kernel_lacks hub 10.11.0.0/16; }
site_routes_gone() { no_learned hub 10.1.0.0/16 && kernel_lacks hub 10.11.0.0/16; }

# withdraw_and_cut NAME WITHDRAW_CMD RESTORE_CMD: the withdrawal and underlay checks.
withdraw_and_cut() {
    local name=$1 withdraw=$2 restore=$3 ms
    eval "$withdraw"
    if ! ms=$(ms_until 5 site_prefix_gone); then
        fail "$name: the withdrawn 10.11.0.0/16 is still learned or in the kernel after 5 s"; return 1
    fi
    if [ "$ms" -gt 1000 ]; then fail "$name: withdrawal took $ms ms (limit 1000)"; return 1; fi
    echo "  withdrawal reached vgw's RIB and the kernel in $ms ms"
    eval "$restore"
    wait_for 10 has_learned hub 10.11.0.0/16 || { fail "$name: 10.11.0.0/16 did not come back after re-announcing"; return 1; }
    # Cut the underlay (the site's internet link); the hold timer is 9 s.
    ip -n "$(ns site)" link set e-hub down
    if ! ms=$(ms_until 12 site_routes_gone); then
        fail "$name: the site's routes stayed after cutting the underlay"; return 1
    fi
    [ "$ms" -le 10000 ] || { fail "$name: routes went only after $ms ms (limit 10000)"; return 1; }
    echo "  underlay cut: the site's routes left vgw in $ms ms"
    ip -n "$(ns site)" link set e-hub up
    if ! wait_for 40 has_learned hub 10.11.0.0/16 || ! wait_for 5 kernel_has hub 10.11.0.0/16; then
        fail "$name: routes did not return with the link ($(peer_state hub $SITE_PEER))"; return 1
    fi
    wait_for 10 in_ns hublan ping -c 1 -W 1 10.11.0.10 || { fail "$name: no ping after the link returned"; return 1; }
    echo "  link restored: routes and traffic are back"
}

peer_counters_grow() {
    local a b
    a=$(vgwc hub vnet-gateway list-bgp-peer-status --peer "$SITE_PEER" --query 'value[0].[messagesSent, messagesReceived, routesReceived]' -o tsv | tr '\t\n' '  ')
    sleep 4
    b=$(vgwc hub vnet-gateway list-bgp-peer-status --peer "$SITE_PEER" --query 'value[0].[messagesSent, messagesReceived, routesReceived]' -o tsv | tr '\t\n' '  ')
    set -- $a $b
    [ "$4" -gt "$1" ] && [ "$5" -gt "$2" ] && [ "$6" = "${EXPECT_ROUTES:-3}" ]
}

run_site_router() { # NAME ROUTER(bird|frr)
    local name=$1 router=$2
    bgp_lab
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    bgp_site_swan || { fail "$name: charon did not start"; lab_cleanup; return; }
    bgp_hub
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    if [ "$router" = bird ]; then
        BIRD_STATIC6="route 2001:db8:1::/48 unreachable;" bird_start site bird 65010 "$SITE_PEER" "$HUB_PEER" 65515 10.1.0.0/16 10.11.0.0/16 \
            || { fail "$name: bird did not start"; lab_cleanup; return; }
    else
        FRR_NETWORK6=2001:db8:1::/48 frr_start site frr 65010 "$SITE_PEER" "$HUB_PEER" 65515 10.1.0.0/16 10.11.0.0/16 \
            || { fail "$name: bgpd did not start"; lab_cleanup; return; }
    fi
    if ! wait_for 30 peer_up hub "$SITE_PEER"; then
        fail "$name: BGP not Connected: $(vgwc hub vnet-gateway list-bgp-peer-status -o json | tr -d '\n ' | head -c 600)"; lab_cleanup; return
    fi
    if ! wait_for 10 has_learned hub 2001:db8:1::/48 || [ -n "$(check_learned_three)" ]; then
        fail "$name: learned routes wrong:$(check_learned_three)"; lab_cleanup; return
    fi
    wait_for 5 kernel_has hub 10.11.0.0/16 || { fail "$name: 10.11.0.0/16 not in the hub's kernel routes"; lab_cleanup; return; }
    wait_for 10 in_ns hublan ping -c 1 -W 1 10.11.0.10 || { fail "$name: 10.11.0.10 unreachable from the hub LAN"; lab_cleanup; return; }
    local seen
    if [ "$router" = bird ]; then
        seen=$(wait_for 10 sh -c "birdc -s $LAB_WORK/bird/bird.ctl show route 10.2.0.0/16 | grep -q 10.2.0.0/16" && echo yes)
    else
        seen=$(wait_for 10 sh -c "vtysh --vty_socket $LAB_WORK/frr -c 'show bgp ipv4 unicast 10.2.0.0/16' | grep -q 65515" && echo yes)
    fi
    [ "$seen" = yes ] || { fail "$name: the site router does not show vgw's 10.2.0.0/16"; lab_cleanup; return; }
    peer_counters_grow || { fail "$name: peer status counters did not grow or routesReceived != 3"; lab_cleanup; return; }
    if [ "$router" = bird ]; then
        sed -i '/10.11.0.0\/16/d' "$LAB_WORK/bird/bird.conf"
        withdraw_and_cut "$name" "birdc -s $LAB_WORK/bird/bird.ctl configure >/dev/null" \
            "sed -i 's|route 10.1.0.0/16 unreachable;|route 10.1.0.0/16 unreachable; route 10.11.0.0/16 unreachable;|' $LAB_WORK/bird/bird.conf; birdc -s $LAB_WORK/bird/bird.ctl configure >/dev/null" \
            || { lab_cleanup; return; }
    else
        withdraw_and_cut "$name" "vtysh --vty_socket $LAB_WORK/frr -c 'conf t' -c 'router bgp 65010' -c 'address-family ipv4 unicast' -c 'no network 10.11.0.0/16' >/dev/null" \
            "vtysh --vty_socket $LAB_WORK/frr -c 'conf t' -c 'router bgp 65010' -c 'address-family ipv4 unicast' -c 'network 10.11.0.0/16' >/dev/null" \
            || { lab_cleanup; return; }
    fi
    pass "$name"
    lab_cleanup
}

scenario_bird() { run_site_router "BIRD 2 behind strongSwan peers with vgw over the tunnel" bird; }
scenario_frr() { run_site_router "FRR bgpd behind strongSwan peers with vgw over the tunnel" frr; }

# bird_bfd: BIRD runs BFD (RFC 5883 multihop, 300 ms x 3) under its BGP session with vgw, over the
# strongSwan tunnel; both see the BFD session Up, and cutting the underlay takes the site's routes out
# of vgw within about a second instead of the 9 s hold time.
scenario_bird_bfd() {
    local name="BIRD 2 with BFD: an underlay cut withdraws the site's routes within ~1 s (hold time 9 s)"
    bgp_lab
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    bgp_site_swan || { fail "$name: charon did not start"; lab_cleanup; return; }
    HUB_CONN_FLAGS="--enable-bfd --bfd-interval 300 --bfd-multiplier 3" bgp_hub
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    BIRD_BFD=300 BIRD_STATIC6="route 2001:db8:1::/48 unreachable;" bird_start site bird 65010 "$SITE_PEER" "$HUB_PEER" 65515 10.1.0.0/16 10.11.0.0/16 \
        || { fail "$name: bird did not start"; lab_cleanup; return; }
    bfd_up() { [ "$(vgwc hub vnet-gateway list-bgp-peer-status --peer "$SITE_PEER" --query 'value[0].[state, bfdState]' -o tsv | tr '\t\n' '  ' | sed 's/ *$//')" = "Connected Up" ]; }
    if ! wait_for 30 bfd_up; then
        fail "$name: BGP+BFD not up: $(vgwc hub vnet-gateway list-bgp-peer-status -o json | tr -d '\n ' | head -c 600)"; lab_cleanup; return
    fi
    wait_for 10 sh -c "birdc -s $LAB_WORK/bird/bird.ctl show bfd sessions | grep -q ' Up '" \
        || { fail "$name: BIRD does not show the BFD session Up: $(birdc -s "$LAB_WORK/bird/bird.ctl" show bfd sessions)"; lab_cleanup; return; }
    wait_for 10 kernel_has hub 10.11.0.0/16 || { fail "$name: 10.11.0.0/16 not installed"; lab_cleanup; return; }
    local ms
    ip -n "$(ns site)" link set e-hub down
    if ! ms=$(ms_until 12 site_routes_gone); then
        fail "$name: the site's routes stayed after cutting the underlay"; lab_cleanup; return
    fi
    echo "  underlay cut: BFD took the site's routes out of vgw in $ms ms"
    [ "$ms" -le 2000 ] || { fail "$name: routes went only after $ms ms (limit 2000 with BFD)"; lab_cleanup; return; }
    ip -n "$(ns site)" link set e-hub up
    wait_for 40 bfd_up && wait_for 10 kernel_has hub 10.11.0.0/16 \
        || { fail "$name: BGP, BFD and the routes did not come back with the link"; lab_cleanup; return; }
    pass "$name ($ms ms)"
    lab_cleanup
}

scenario_vgw() {
    local name="vgw <-> vgw with BGP: the site's three prefixes learned, traffic to 10.11.0.10"
    bgp_lab
    lab_vgw hub hub && lab_vgw site site || { fail "$name: vgw did not start"; lab_cleanup; return; }
    # Azure refuses 65515 as a peer's ASN, so this hub uses another private ASN.
    HUB_ASN=65100 bgp_hub
    vgwc site vnet-gateway create -n site-gw --public-ip-addresses "$SITE_IP" \
        --vnet-address-space 10.1.0.0/16 10.11.0.0/16 2001:db8:1::/48 --asn 65010 --bgp-peering-address "$SITE_PEER" -o none
    vgwc site local-gateway create -n hub --gateway-ip-address "$VGW_IP" --asn 65100 --bgp-peering-address "$HUB_PEER" \
        --bgp-hold-time 9 --bgp-keepalive 3 -o none
    vgwc site vpn-connection create -n to-hub --local-gateway2 hub --shared-key "$PSK" --enable-bgp -o none
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    wait_for 30 peer_up hub "$SITE_PEER" || { fail "$name: BGP not Connected ($(peer_state hub $SITE_PEER))"; lab_cleanup; return; }
    if ! wait_for 10 has_learned hub 2001:db8:1::/48 || [ -n "$(check_learned_three | sed 's/2001:db8:1::\/48=\[EBgp 65010 [^]]*\]//')" ]; then
        fail "$name: learned routes wrong:$(check_learned_three)"; lab_cleanup; return
    fi
    wait_for 10 in_ns hublan ping -c 1 -W 1 10.11.0.10 || { fail "$name: 10.11.0.10 unreachable from the hub LAN"; lab_cleanup; return; }
    wait_for 10 has_learned site 10.2.0.0/16 || { fail "$name: the site vgw did not learn 10.2.0.0/16"; lab_cleanup; return; }
    pass "$name"
    lab_cleanup
}

scenario_reset_evidence() {
    local name="reset takes an evidence archive first: manifest, BGP peer status and learned routes"
    bgp_lab
    lab_vgw hub hub && lab_vgw site site || { fail "$name: vgw did not start"; lab_cleanup; return; }
    HUB_ASN=65100 bgp_hub
    vgwc site vnet-gateway create -n site-gw --public-ip-addresses "$SITE_IP" \
        --vnet-address-space 10.1.0.0/16 10.11.0.0/16 --asn 65010 --bgp-peering-address "$SITE_PEER" -o none
    vgwc site local-gateway create -n hub --gateway-ip-address "$VGW_IP" --asn 65100 --bgp-peering-address "$HUB_PEER" \
        --bgp-hold-time 9 --bgp-keepalive 3 -o none
    vgwc site vpn-connection create -n to-hub --local-gateway2 hub --shared-key "$PSK" --enable-bgp -o none
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    wait_for 30 peer_up hub "$SITE_PEER" && wait_for 10 has_learned hub 10.11.0.0/16 \
        || { fail "$name: BGP not up ($(peer_state hub $SITE_PEER))"; lab_cleanup; return; }
    local archive problems="" x="$LAB_WORK/evidence-x"
    archive=$(vgwc hub vnet-gateway reset -n hub-gw --query evidenceArchive -o tsv)
    [ -f "$archive" ] || { fail "$name: no archive in the reset's answer ($archive)"; lab_cleanup; return; }
    mkdir -p "$x" && tar -xzf "$archive" -C "$x" || problems="$problems untar"
    local root; root=$(find "$x" -name manifest.json -printf '%h\n' | head -1)
    for part in gateways.json connections.json connections/to-site-diagnostics.json bgp-peer-status.json \
                learned-routes.json "advertised-routes/${SITE_PEER//./_}.json" kernel-routes.txt metrics.txt \
                diagnostic-logs.json doctor.json export.json; do
        python3 -c "import json,sys; m=json.load(open(sys.argv[1])); sys.exit(0 if sys.argv[2] in [p['name'] for p in m['parts']] else 1)" \
            "$root/manifest.json" "$part" || problems="$problems manifest-lacks-$part"
        [ -f "$root/$part" ] || problems="$problems archive-lacks-$part"
    done
    # Every hash in the manifest matches its file.
    python3 - "$root" <<'PY' || problems="$problems hash-mismatch"
import hashlib, json, os, sys
root = sys.argv[1]
m = json.load(open(os.path.join(root, "manifest.json")))
bad = [p["name"] for p in m["parts"] if hashlib.sha256(open(os.path.join(root, p["name"]), "rb").read()).hexdigest() != p["sha256"]]
sys.exit(1 if bad else 0)
PY
    grep -q '"Connected"' "$root/bgp-peer-status.json" || problems="$problems peer-status-not-Connected"
    grep -q '10.11.0.0/16' "$root/learned-routes.json" || problems="$problems learned-routes-lack-10.11"
    grep -q 'ip_forward = 1' "$root/kernel-routes.txt" || problems="$problems no-forwarding"
    grep -q "$PSK" -r "$root" && problems="$problems psk-in-archive"
    local skipped; skipped=$(vgwc hub vpn-connection reset -n to-site --skip-evidence --query evidenceArchive -o tsv 2>&1)
    [ -z "$skipped" ] || problems="$problems skip-evidence-took-one($skipped)"
    local n; n=$(find "$LAB_WORK/hub-state/evidence" -name '*.tar.gz' | wc -l)
    [ "$n" = 1 ] || problems="$problems archives-$n"
    # collect-evidence with a 2 s capture of the connection, downloaded with --output.
    in_ns hublan ping -c 8 -i 0.3 10.11.0.10 >/dev/null 2>&1 &
    local pinger=$!
    vgwc hub vnet-gateway collect-evidence --connection to-site --capture-seconds 2 --output-file "$LAB_WORK/ev.tgz" -o none 2>"$LAB_WORK/collect.err" \
        || problems="$problems collect-evidence($(cat "$LAB_WORK/collect.err"))"
    wait "$pinger"
    tar -tzf "$LAB_WORK/ev.tgz" 2>/dev/null | grep -q '/capture.pcapng$' || problems="$problems no-capture-in-download"
    if [ -z "$problems" ]; then
        pass "$name ($(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['parts']))" "$root/manifest.json") parts, $(stat -c %s "$archive") bytes)"
    else
        fail "$name:$problems"
    fi
    lab_cleanup
}

# transit: two sites on one "internet" bridge, A (BIRD, AS 65010) and B (FRR, AS 65020), each behind
# strongSwan; each learns the other's prefix through vgw (AS path 65515 <other>), never its own.
scenario_transit() {
    local name="transit: two sites learn each other's prefixes through vgw, never their own"
    lab_add_ns inet
    ip -n "$(ns inet)" link add br0 type bridge
    ip -n "$(ns inet)" link set br0 up
    local r
    for r in hub site siteb; do
        lab_add_ns "$r" router
        ip link add "e-inet" netns "$(ns "$r")" type veth peer name "x-$r" netns "$(ns inet)"
        ip -n "$(ns inet)" link set "x-$r" master br0 up
        ip -n "$(ns "$r")" link set e-inet up
    done
    ip -n "$(ns hub)" addr add 198.18.0.2/24 dev e-inet
    ip -n "$(ns site)" addr add 198.18.0.1/24 dev e-inet
    ip -n "$(ns siteb)" addr add 198.18.0.3/24 dev e-inet
    ip -n "$(ns site)" addr add "$SITE_PEER/32" dev lo
    ip -n "$(ns siteb)" addr add 10.21.255.254/32 dev lo
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    # Site A: strongSwan + BIRD.
    SITE_TS="10.1.0.0/16" HUB_TS="10.2.0.0/16,10.21.0.0/16" site_conf aes256gcm16-prfsha256-ecp256 aes256gcm16 none
    lab_charon site site || { fail "$name: charon A"; lab_cleanup; return; }
    # Site B: strongSwan + FRR (its own swanctl.conf in $LAB_WORK/siteb).
    mkdir -p "$LAB_WORK/siteb"
    sed -e "s/$SITE_IP/198.18.0.3/g" -e 's|local_ts = 10.1.0.0/16|local_ts = 10.21.0.0/16|'         -e 's|remote_ts = 10.2.0.0/16,10.21.0.0/16|remote_ts = 10.2.0.0/16,10.1.0.0/16|'         "$LAB_WORK/site/swanctl.conf" >"$LAB_WORK/siteb/swanctl.conf"
    lab_charon siteb siteb || { fail "$name: charon B"; lab_cleanup; return; }
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses "$VGW_IP" --vnet-address-space 10.2.0.0/16 \
        --asn 65515 --bgp-peering-address "$HUB_PEER" -o none
    vgwc hub local-gateway create -n site --gateway-ip-address "$SITE_IP" --asn 65010 --bgp-peering-address "$SITE_PEER" \
        --bgp-hold-time 9 --bgp-keepalive 3 -o none
    vgwc hub local-gateway create -n siteb --gateway-ip-address 198.18.0.3 --asn 65020 --bgp-peering-address 10.21.255.254 \
        --bgp-hold-time 9 --bgp-keepalive 3 -o none
    vgwc hub vpn-connection create -n to-site --local-gateway2 site --shared-key "$PSK" --enable-bgp -o none
    vgwc hub vpn-connection create -n to-siteb --local-gateway2 siteb --shared-key "$PSK" --enable-bgp -o none
    wait_for 10 is_connected hub to-site && wait_for 10 is_connected hub to-siteb || { fail "$name: tunnels not Connected"; lab_cleanup; return; }
    bird_start site bird 65010 "$SITE_PEER" "$HUB_PEER" 65515 10.1.0.0/16 || { fail "$name: bird"; lab_cleanup; return; }
    frr_start siteb frr 65020 10.21.255.254 "$HUB_PEER" 65515 10.21.0.0/16 || { fail "$name: bgpd"; lab_cleanup; return; }
    wait_for 30 peer_up hub "$SITE_PEER" && wait_for 30 peer_up hub 10.21.255.254 || { fail "$name: BGP sessions not up"; lab_cleanup; return; }
    local a_sees b_sees a_own b_own
    wait_for 15 sh -c "birdc -s $LAB_WORK/bird/bird.ctl show route 10.21.0.0/16 all | grep -q 'BGP.as_path: 65515 65020'"; a_sees=$?
    wait_for 15 sh -c "vtysh --vty_socket $LAB_WORK/frr -c 'show bgp ipv4 unicast 10.1.0.0/16' | grep -q '65515 65010'"; b_sees=$?
    birdc -s "$LAB_WORK/bird/bird.ctl" show route 10.1.0.0/16 all | grep -q 'from' && a_own=1 || a_own=0
    vtysh --vty_socket "$LAB_WORK/frr" -c 'show bgp ipv4 unicast 10.21.0.0/16' | grep -q '65515' && b_own=1 || b_own=0
    # FRR sends vgw's transit routes back (AS path 65020 65515 ...): vgw drops them for holding its own
    # ASN and must log them as dropped, never as learned.
    local log echoed
    log=$(vgwc hub logs --category RouteDiagnosticLog)
    echoed=$(echo "$log" | grep -E "from 10\.21\.255\.254: learned .*10\.(1|2)\.0\.0/16" | head -1)
    echo "$log" | grep -m1 "from 10.21.255.254: dropped" | sed 's/^/  vgw: /' | cut -c1-220
    if [ $a_sees = 0 ] && [ $b_sees = 0 ] && [ $a_own = 0 ] && [ $b_own = 0 ] && [ -z "$echoed" ]; then
        pass "$name"
    else
        fail "$name: A sees B's prefix: $a_sees, B sees A's: $b_sees, A got its own back: $a_own, B got its own back: $b_own, looped path logged as learned: [$echoed]"
    fi
    lab_cleanup
}

# scale: BIRD advertises 10,000 /24s; vgw learns and installs all of them without tearing the session down.
scenario_scale() {
    local name="10,000 prefixes from one peer: all learned and installed, session stays up"
    bgp_lab
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    bgp_site_swan || { fail "$name: charon"; lab_cleanup; return; }
    bgp_hub --bgp-max-prefixes 5000
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    local prefixes=() i
    for i in $(seq 0 9999); do prefixes+=("10.$((128 + i / 256)).$((i % 256)).0/24"); done
    local t0; t0=$(date +%s%N)
    bird_start site bird 65010 "$SITE_PEER" "$HUB_PEER" 65515 "${prefixes[@]}" || { fail "$name: bird"; lab_cleanup; return; }
    count() { vgwc hub vnet-gateway list-bgp-peer-status --peer "$SITE_PEER" --query 'value[0].routesReceived' -o tsv; }
    if ! wait_for 60 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vnet-gateway list-bgp-peer-status --peer $SITE_PEER --query 'value[0].routesReceived' -o tsv)\" = 10000 ]"; then
        fail "$name: routesReceived $(count) after 60 s"; lab_cleanup; return
    fi
    local learned_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    local kernel
    wait_for 60 sh -c "[ \$(ip -n $(ns hub) route show | grep -c '^10\.1[2-6][0-9]\.') -ge 10000 ]"
    kernel=$(ip -n "$(ns hub)" route show | grep -c '^10\.1[2-6][0-9]\.')
    local installed_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    local pid; pid=$(pgrep -f "serve --state-dir $LAB_WORK/hub-state" | head -1)
    local rss; rss=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$pid/status")
    if [ "$kernel" -ge 10000 ] && peer_up hub "$SITE_PEER" && vgwc hub logs --category RouteDiagnosticLog | grep -q "prefix limit"; then
        pass "$name: learned in ${learned_ms} ms, in the kernel in ${installed_ms} ms, vgw RSS $rss; the limit (5000) warned and the session stayed up"
    else
        fail "$name: kernel routes $kernel, state $(peer_state hub $SITE_PEER)"
    fi
    lab_cleanup
}

# forged: RFC 7296 §2.21 — an attacker sends unauthenticated IKE datagrams "from" the site's address
# (tests/interop/forge_ike.py: an IKE_SA_INIT with a refused proposal, an IKE_SA_INIT error response and
# INFORMATIONAL requests with the live SA's SPIs, an unknown SPI, garbage). For 10 s the connection stays
# Connected, BGP stays Established with the site's routes, pings pass, strongSwan keeps the same IKE SA,
# and the refusals show in `vpn-connection show` and in vgw_ike_refused_exchanges_total.
scenario_forged() {
    local name="forged IKE_SA_INIT and INFORMATIONAL from the site's address change nothing"
    bgp_lab
    LAB_VGW_ARGS="--metrics-listen 127.0.0.1:9464" lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    bgp_site_swan || { fail "$name: charon did not start"; lab_cleanup; return; }
    bgp_hub
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    bird_start site bird 65010 "$SITE_PEER" "$HUB_PEER" 65515 10.1.0.0/16 10.11.0.0/16 \
        || { fail "$name: bird did not start"; lab_cleanup; return; }
    if ! wait_for 30 peer_up hub "$SITE_PEER" || ! wait_for 10 kernel_has hub 10.11.0.0/16; then
        fail "$name: BGP not up before the attack ($(peer_state hub $SITE_PEER))"; lab_cleanup; return
    fi
    local sas spi_i spi_r
    sas=$(swan site --list-sas 2>/dev/null)
    spi_i=$(echo "$sas" | grep -oE '[0-9a-f]{16}_i' | head -1 | cut -d_ -f1)
    spi_r=$(echo "$sas" | grep -oE '[0-9a-f]{16}_r' | head -1 | cut -d_ -f1)
    [ -n "$spi_i" ] && [ -n "$spi_r" ] || { fail "$name: no IKE SA SPIs in: $sas"; lab_cleanup; return; }
    echo "  the live IKE SA: ${spi_i}_i ${spi_r}_r; forging"
    in_ns site python3 "$(dirname "${BASH_SOURCE[0]}")/forge_ike.py" "$SITE_IP" "$VGW_IP" "$spi_i" "$spi_r" \
        || { fail "$name: the forging script failed"; lab_cleanup; return; }
    local end=$(( $(date +%s) + 10 )) bad="" checks=0
    while [ "$(date +%s)" -lt "$end" ]; do
        is_connected hub to-site || bad="connectionStatus $(conn_status hub to-site)"
        peer_up hub "$SITE_PEER" || bad="$bad BGP $(peer_state hub "$SITE_PEER")"
        has_learned hub 10.11.0.0/16 && kernel_has hub 10.11.0.0/16 || bad="$bad 10.11.0.0/16 withdrawn"
        [ -n "$bad" ] && break
        checks=$((checks + 1))
        sleep 0.2
    done
    if [ -n "$bad" ]; then
        fail "$name: after $checks checks:$bad; lastError $(vgwc hub vpn-connection show -n to-site --query lastError -o json | tr -d '\n ')"
        lab_cleanup; return
    fi
    wait_for 5 in_ns hublan ping -c 1 -W 1 10.11.0.10 || { fail "$name: no ping to 10.11.0.10 after the attack"; lab_cleanup; return; }
    swan site --list-sas 2>/dev/null | grep -q "${spi_i}_i" || { fail "$name: strongSwan's IKE SA changed"; lab_cleanup; return; }
    local refused last metric
    refused=$(vgwc hub vpn-connection show -n to-site --query refusedExchanges -o tsv)
    last=$(vgwc hub vpn-connection show -n to-site --query 'lastRefusedExchange.[exchange, reason, ignoredBecauseEstablished]' -o tsv | tr '\t\n' '  ')
    metric=$(in_ns hub curl -s http://127.0.0.1:9464/metrics | grep '^vgw_ike_refused_exchanges_total{connection_name="to-site",exchange="IKE_SA_INIT",reason="NO_PROPOSAL_CHOSEN"}' | awk '{print $2}')
    echo "  refusedExchanges $refused, last: $last; NO_PROPOSAL_CHOSEN counter: ${metric:-none}"
    if [ "${refused:-0}" -ge 5 ] && [ "${metric:-0}" -ge 1 ] && [ "$(vgwc hub vpn-connection show -n to-site --query connectionStatusReason -o tsv)" != NEGOTIATION_FAILURE ]; then
        pass "$name ($checks checks over 10 s: Connected, BGP Established, routes kept; $refused refusals counted)"
    else
        fail "$name: refusals not counted (refusedExchanges ${refused:-none}, metric ${metric:-none})"
    fi
    lab_cleanup
}

# child_deleted (issue 19): strongSwan deletes its only Child SA and keeps the IKE SA. The BGP session over
# the tunnel follows at once: the site's routes leave vgw's RIB and kernel (no waiting for the hold time);
# vgw re-creates the Child SA, BGP re-establishes and the routes and traffic return.
scenario_child_deleted() {
    local name="the peer deletes its Child SA: BGP over it stops at once, then everything returns"
    bgp_lab
    lab_vgw hub hub || { fail "$name: vgw did not start"; lab_cleanup; return; }
    bgp_site_swan || { fail "$name: charon did not start"; lab_cleanup; return; }
    bgp_hub
    wait_for 10 is_connected hub to-site || { fail "$name: tunnel not Connected"; lab_cleanup; return; }
    bird_start site bird 65010 "$SITE_PEER" "$HUB_PEER" 65515 10.1.0.0/16 10.11.0.0/16 \
        || { fail "$name: bird did not start"; lab_cleanup; return; }
    if ! wait_for 30 peer_up hub "$SITE_PEER" || ! wait_for 10 kernel_has hub 10.11.0.0/16; then
        fail "$name: BGP not up ($(peer_state hub $SITE_PEER))"; lab_cleanup; return
    fi
    local gone back
    swan site --terminate --child net --timeout 5 >/dev/null 2>&1 &
    local term=$!
    if ! gone=$(ms_until 5 site_routes_gone); then
        wait $term; fail "$name: the site's routes stayed after its Child SA was deleted ($(conn_status hub to-site))"; lab_cleanup; return
    fi
    wait $term
    if ! back=$(ms_until 40 sh -c "VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vnet-gateway list-bgp-peer-status --peer $SITE_PEER --query 'value[0].state' -o tsv | grep -qx Connected && ip -n $(ns hub) route show 10.11.0.0/16 | grep -q ."); then
        fail "$name: BGP and routes did not return ($(conn_status hub to-site), BGP $(peer_state hub $SITE_PEER))"; lab_cleanup; return
    fi
    wait_for 10 in_ns hublan ping -c 1 -W 1 10.11.0.10 || { fail "$name: no ping after the Child SA returned"; lab_cleanup; return; }
    if [ "$gone" -le 2000 ]; then
        pass "$name: routes withdrawn in $gone ms, BGP and routes back $back ms later"
    else
        fail "$name: routes withdrawn only after $gone ms (limit 2000; hold time 9 s)"
    fi
    lab_cleanup
}

all="bird bird_bfd frr vgw transit scale forged child_deleted reset_evidence"
# Sourced (for debugging): define the functions only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
for s in ${*:-$all}; do "scenario_$s"; done
summary
