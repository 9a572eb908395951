#!/usr/bin/env bash
# Point-to-site with IKEv2 certificates: a strongSwan road warrior (charon in the `site` namespace,
# 198.18.0.1) with certificates from `vgw pki`, against vgw on the hub.
#   connect  - the client gets an address from the pool and the DNS server, pings the hub LAN, and
#              shows in `vpn-client show-health`; revoking its thumbprint drops it within 5 s, it cannot
#              reconnect, and P2SDiagnosticLog says revoked
#   refused  - a certificate from another root and an expired one are refused, with the reason logged
# Usage: tests/interop/p2s.sh [scenario ...]   (default: all; root)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/swan_site.sh"

POOL=172.16.201.0/24
DNS=10.2.0.53

# p2s_lab: topology, vgw with point-to-site, a PKI with a good root and another one.
p2s_lab() {
    lab_topology
    lab_vgw hub hub || return 1
    local pki="$LAB_WORK/pki"
    rm -rf "$pki"; mkdir -p "$pki"
    "$VGW" pki create-root --name root --out "$pki" -o json >"$pki/root.json" || return 1
    "$VGW" pki create-root --name other --out "$pki" -o none || return 1
    "$VGW" pki issue-client --root root --root-dir "$pki" --name alice --out "$pki" --no-p12 -o none || return 1
    "$VGW" pki issue-client --root other --root-dir "$pki" --name mallory --out "$pki" --no-p12 -o none || return 1
    "$VGW" pki issue-client --root root --root-dir "$pki" --name old --out "$pki" --no-p12 \
        --not-before 2024-01-01T00:00:00Z --not-after 2024-02-01T00:00:00Z -o none || return 1
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses "$VGW_IP" --vnet-address-space 10.2.0.0/16 \
        --address-prefixes "$POOL" --client-protocol IkeV2 ${P2S_EXTRA:-} --vpn-client-dns-servers "$DNS" -o none || return 1
    local data; data=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["publicCertData"])' "$pki/root.json")
    vgwc hub vnet-gateway root-cert create --gateway-name hub-gw --name root --public-cert-data "$data" -o none || return 1
    wait_for 5 test -s "$LAB_WORK/hub-state/p2s/ca.crt.pem"
}

# rw_start USER: charon in `site` as a road warrior with USER's certificate.
rw_start() {
    local user=$1 dir="$LAB_WORK/site"
    rm -rf "$dir"; mkdir -p "$dir/x509" "$dir/x509ca" "$dir/private"
    cp "$LAB_WORK/pki/$user.crt.pem" "$dir/x509/"
    cp "$LAB_WORK/pki/$user.key.pem" "$dir/private/"
    cp "$LAB_WORK/hub-state/p2s/ca.crt.pem" "$dir/x509ca/gateway-ca.crt.pem"
    cat >"$dir/swanctl.conf" <<EOF
connections {
    vgw {
        version = 2
        remote_addrs = $VGW_IP
        vips = 0.0.0.0
        proposals = aes256gcm16-prfsha256-ecp256
        local { auth = pubkey
                certs = $user.crt.pem }
        remote { auth = pubkey
                 id = $VGW_IP }
        children { hub { remote_ts = 10.2.0.0/16
                         esp_proposals = aes256gcm16
                         start_action = none } }
    }
}
EOF
    CHARON_PLUGINS_EXTRA=resolve SWANCTL_DIR="$dir" lab_charon site site
}
rw_up() { SWANCTL_DIR="$LAB_WORK/site" swan site --initiate --child hub --timeout 8 >"$LAB_WORK/site/initiate.log" 2>&1; }
rw_vip() { SWANCTL_DIR="$LAB_WORK/site" swan site --list-sas 2>/dev/null | grep -o 'remote.*' >/dev/null; in_ns site ip -4 addr show | grep -o '172\.16\.201\.[0-9]*' | head -1; }
health_count() { vgwc hub vnet-gateway vpn-client show-health --query vpnClientConnectionsCount -o tsv; }
p2s_log() { vgwc hub logs --category P2SDiagnosticLog; }

scenario_connect() {
    local name="road warrior: address and DNS from vgw, ping to the hub LAN, show-health, revocation"
    p2s_lab || { fail "$name: setup"; lab_cleanup; return; }
    rw_start alice || { fail "$name: charon"; lab_cleanup; return; }
    if ! rw_up; then fail "$name: IKE failed: $(tail -5 "$LAB_WORK/site/initiate.log")"; lab_cleanup; return; fi
    local vip; vip=$(rw_vip)
    [ -n "$vip" ] || { fail "$name: no pool address on the client"; lab_cleanup; return; }
    grep -q "nameserver $DNS" "$LAB_WORK/site/resolv.conf" 2>/dev/null || { fail "$name: the DNS server $DNS never reached the client"; lab_cleanup; return; }
    wait_for 5 in_ns site ping -c 1 -W 1 -I "$vip" 10.2.0.10 || { fail "$name: no ping from $vip to 10.2.0.10"; lab_cleanup; return; }
    [ "$(health_count)" = 1 ] || { fail "$name: show-health count $(health_count)"; lab_cleanup; return; }
    local row; row=$(vgwc hub vnet-gateway vpn-client show-health --query 'value[0].[vpnUserName, privateIpAddress]' -o tsv | tr '\t\n' '  ')
    case "$row" in "alice $vip"*) ;; *) fail "$name: show-health row [$row]"; lab_cleanup; return ;; esac
    # Revoke alice: dropped within 5 s, refused afterwards, and the log says why.
    local thumb; thumb=$("$VGW" pki show --cert "$LAB_WORK/pki/alice.crt.pem" --query thumbprint -o tsv)
    local t0; t0=$(date +%s%N)
    vgwc hub vnet-gateway revoked-cert create --gateway-name hub-gw --name alice --thumbprint "$thumb" -o none
    if ! wait_for 5 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vnet-gateway vpn-client show-health --query vpnClientConnectionsCount -o tsv)\" = 0 ]"; then
        fail "$name: still connected 5 s after revocation"; lab_cleanup; return
    fi
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if rw_up; then fail "$name: a revoked client reconnected"; lab_cleanup; return; fi
    if ! p2s_log | grep -qi revoked; then fail "$name: P2SDiagnosticLog does not say revoked"; lab_cleanup; return; fi
    pass "$name (address $vip; dropped ${ms} ms after revocation; reconnect refused)"
    lab_cleanup
}

scenario_refused() {
    local name="certificates from another root and expired ones are refused with the reason logged"
    p2s_lab || { fail "$name: setup"; lab_cleanup; return; }
    rw_start mallory || { fail "$name: charon"; lab_cleanup; return; }
    if rw_up; then fail "$name: a certificate from another root connected"; lab_cleanup; return; fi
    lab_cleanup_site() { for pid in $(ip netns pids "$(ns site)"); do kill "$pid" 2>/dev/null; done; sleep 0.3; }
    lab_cleanup_site
    rw_start old || { fail "$name: charon"; lab_cleanup; return; }
    if rw_up; then fail "$name: an expired certificate connected"; lab_cleanup; return; fi
    local log; log=$(p2s_log)
    if echo "$log" | grep -q CERTIFICATE_UNTRUSTED && echo "$log" | grep -q CERTIFICATE_EXPIRED; then
        pass "$name"
    else
        fail "$name: P2SDiagnosticLog: $(echo "$log" | tail -4)"
    fi
    lab_cleanup
}

# profile: the package from `vpn-client generate`, fetched over HTTPS from the gateway by the client
# (verifying the gateway CA), has every platform's file; the .mobileconfig is a property list naming the
# gateway's proposals; the swanctl.conf, used as-is with the client's certificate, connects; a tampered
# URL is refused.
scenario_profile() {
    local name="client package: signed HTTPS download, mobileconfig names the proposals, swanctl.conf connects as-is"
    p2s_lab || { fail "$name: setup"; lab_cleanup; return; }
    local url; url=$(vgwc hub vnet-gateway vpn-client generate -o tsv)
    case "$url" in https://198.18.0.2:8443/vpnclient/*) ;; *) fail "$name: URL [$url]"; lab_cleanup; return ;; esac
    local pkg="$LAB_WORK/pkg"; mkdir -p "$pkg"
    if ! wait_for 5 in_ns site curl -sf --cacert "$LAB_WORK/hub-state/p2s/ca.crt.pem" -o "$pkg/vpnclient.zip" "$url"; then
        fail "$name: download failed"; lab_cleanup; return
    fi
    local code; code=$(in_ns site curl -s -o /dev/null -w '%{http_code}' --cacert "$LAB_WORK/hub-state/p2s/ca.crt.pem" "${url%/*}x/hub-gw.zip")
    [ "$code" = 404 ] || [ "$code" = 403 ] || { fail "$name: a tampered URL answered $code"; lab_cleanup; return; }
    local check
    check=$(python3 - "$pkg/vpnclient.zip" <<'PY'
import io, plistlib, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
need = ["README.txt", "strongSwan/swanctl.conf", "Windows/vpnconfig.ps1"]
missing = [n for n in need if n not in names]
mc = [n for n in names if n.endswith(".mobileconfig")]
if not mc:
    missing.append("*.mobileconfig")
    print("missing:", missing); sys.exit(0)
profile = plistlib.loads(z.read(mc[0]))
vpn = [p for p in profile["PayloadContent"] if p.get("PayloadType") == "com.apple.vpn.managed"][0]
ike = vpn["IKEv2"]["IKESecurityAssociationParameters"]
ps1 = z.read("Windows/vpnconfig.ps1").decode()
ok = ike["EncryptionAlgorithm"] == "AES-256" and ike["DiffieHellmanGroup"] == 14 and "Set-VpnConnectionIPsecConfiguration" in ps1
z.extractall(sys.argv[1] + ".d")
print("ok" if ok and not missing else f"missing: {missing} ike: {ike}")
PY
)
    [ "$check" = ok ] || { fail "$name: package: $check"; lab_cleanup; return; }
    # The swanctl profile as-is, with alice's certificate as the client certificate it names.
    local dir="$LAB_WORK/site"; rm -rf "$dir"; mkdir -p "$dir/x509" "$dir/x509ca" "$dir/private"
    cp "$pkg/vpnclient.zip.d/strongSwan/swanctl.conf" "$dir/swanctl.conf"
    cp "$pkg"/vpnclient.zip.d/strongSwan/*ca*.pem "$dir/x509ca/" 2>/dev/null || cp "$LAB_WORK/hub-state/p2s/ca.crt.pem" "$dir/x509ca/"
    cp "$LAB_WORK/pki/alice.crt.pem" "$dir/x509/client.crt.pem"
    cp "$LAB_WORK/pki/alice.key.pem" "$dir/private/client.key.pem"
    CHARON_PLUGINS_EXTRA=resolve SWANCTL_DIR="$dir" lab_charon site site || { fail "$name: charon refused the profile: $(cat "$dir/load.log")"; lab_cleanup; return; }
    local child; child=$(grep -o '^ *[A-Za-z0-9_-]* *{' "$dir/swanctl.conf" | sed -n '4p' | tr -d ' {')
    SWANCTL_DIR="$dir" swan site --initiate --child "${child:-vgw}" --timeout 8 >/dev/null 2>&1
    if wait_for 10 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vnet-gateway vpn-client show-health --query vpnClientConnectionsCount -o tsv)\" = 1 ]"; then
        pass "$name"
    else
        fail "$name: the profile's swanctl.conf did not connect: $(tail -5 "$dir/charon.log")"
    fi
    lab_cleanup
}

# wireguard: the gateway-wide package holds no WireGuard key; bob's own package (generate --client bob)
# holds his .conf only and not alice's key; wireguard-go with it connects and pings the hub LAN from the
# WireGuard half of the pool and shows in show-health; a revoked URL and a removed peer's URL answer 403.
scenario_wireguard() {
    local name="WireGuard: wireguard-go with the package's .conf pings the hub LAN"
    P2S_EXTRA="WireGuard --wireguard-peers alice bob" p2s_lab || { fail "$name: setup"; lab_cleanup; return; }
    local ca="$LAB_WORK/hub-state/p2s/ca.crt.pem"
    # The gateway-wide package holds no WireGuard key at all.
    local gwurl; gwurl=$(vgwc hub vnet-gateway vpn-client generate -o tsv)
    local pkg="$LAB_WORK/pkg"; rm -rf "$pkg"; mkdir -p "$pkg"
    wait_for 5 in_ns site curl -sf --cacert "$ca" -o "$pkg/gw.zip" "$gwurl" || { fail "$name: gateway package download"; lab_cleanup; return; }
    if python3 -c 'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); sys.exit(0 if any(b"PrivateKey =" in z.read(n) for n in z.namelist()) else 1)' "$pkg/gw.zip"; then
        fail "$name: the gateway-wide package holds a WireGuard private key"; lab_cleanup; return
    fi
    # Bob's own package: his key only.
    local url; url=$(vgwc hub vnet-gateway vpn-client generate --client bob -o tsv)
    wait_for 5 in_ns site curl -sf --cacert "$ca" -o "$pkg/p.zip" "$url" || { fail "$name: download"; lab_cleanup; return; }
    (cd "$pkg" && python3 -c 'import zipfile; zipfile.ZipFile("p.zip").extractall(".")')
    local confs; confs=$(cd "$pkg" && ls WireGuard/ 2>/dev/null | tr '\n' ' ')
    [ "$confs" = "bob.conf " ] || { fail "$name: bob's package holds [$confs]"; lab_cleanup; return; }
    local conf="$pkg/WireGuard/bob.conf"
    local alice_url; alice_url=$(vgwc hub vnet-gateway vpn-client generate --client alice -o tsv)
    in_ns site curl -sf --cacert "$ca" -o "$pkg/a.zip" "$alice_url" || { fail "$name: alice's download"; lab_cleanup; return; }
    local alice_key; alice_key=$(python3 -c 'import sys,zipfile; print(zipfile.ZipFile(sys.argv[1]).read("WireGuard/alice.conf").decode())' "$pkg/a.zip" | sed -n 's/^PrivateKey = //p')
    [ -n "$alice_key" ] || { fail "$name: alice's package has no key"; lab_cleanup; return; }
    if grep -rqF "$alice_key" "$pkg/p.zip" "$pkg"/WireGuard "$pkg/gw.zip"; then fail "$name: another user's package holds alice's private key"; lab_cleanup; return; fi
    # Revoked URLs answer 403: one URL, and every URL of a removed peer.
    vgwc hub vnet-gateway vpn-client revoke-url --url "$alice_url" -o none || { fail "$name: revoke-url"; lab_cleanup; return; }
    local code; code=$(in_ns site curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "$alice_url")
    [ "$code" = 403 ] || { fail "$name: a revoked URL answered $code"; lab_cleanup; return; }
    local bob2; bob2=$(vgwc hub vnet-gateway vpn-client generate --client bob -o tsv)
    local addr; addr=$(sed -n 's/^Address *= *//p' "$conf" | cut -d, -f1)
    # wg(8) takes the conf without wg-quick's Address/DNS/MTU lines.
    grep -vE '^(Address|DNS|MTU) *=' "$conf" >"$pkg/wg.conf"
    in_ns site env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f wgc >"$LAB_WORK/wireguard-go.log" 2>&1 &
    LAB_PIDS+=($!)
    wait_for 5 in_ns site ip link show wgc || { fail "$name: wireguard-go did not start"; lab_cleanup; return; }
    in_ns site wg setconf wgc "$pkg/wg.conf" || { fail "$name: wg setconf refused the .conf"; lab_cleanup; return; }
    in_ns site ip addr add "$addr" dev wgc
    in_ns site ip link set wgc up
    in_ns site ip route add 10.2.0.0/16 dev wgc
    local ip=${addr%/*}
    case "$ip" in 172.16.201.1[2-9][0-9]|172.16.201.2[0-9][0-9]) ;; *) fail "$name: address $ip is not in the pool's WireGuard half"; lab_cleanup; return ;; esac
    if ! wait_for 10 in_ns site ping -c 1 -W 1 -I "$ip" 10.2.0.10; then
        fail "$name: no ping; $(in_ns site wg show wgc 2>&1 | tr '\n' ' ')"; lab_cleanup; return
    fi
    bob_row() { vgwc hub vnet-gateway vpn-client show-health --query "value[?vpnUserName=='bob'] | [0].privateIpAddress" -o tsv; }
    wait_for 5 sh -c "[ \"\$(VGW_API_SOCKET=$LAB_WORK/hub.sock $VGW vnet-gateway vpn-client show-health --query \"value[?vpnUserName=='bob'] | [0].privateIpAddress\" -o tsv)\" = $ip ]" \
        || { fail "$name: show-health lists bob as [$(bob_row)]"; lab_cleanup; return; }
    vgwc hub vnet-gateway update -n hub-gw --wireguard-peers alice -o none || { fail "$name: removing bob"; lab_cleanup; return; }
    code=$(in_ns site curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "$bob2")
    [ "$code" = 403 ] || { fail "$name: the URL of a removed peer answered $code"; lab_cleanup; return; }
    pass "$name (address $ip; bob's package holds bob's key only; revoked URLs answer 403)"
    lab_cleanup
}

# download_limits: 3,000 idle TCP connections to the download port (from 198.18.0.10, never a TLS byte)
# are all closed by the daemon within the handshake timeout (no established socket left on its side) (shortened to 2 s with --p2s-download-timeout; beyond the
# per-source cap they are closed at once), a download from another address works meanwhile, and the
# daemon's descriptors and RSS come back near their baseline (printed).
scenario_download_limits() {
    local name="download port: 3,000 idle connections closed by the timeout, downloads keep working, fds and RSS back to baseline"
    LAB_VGW_ARGS="--p2s-download-timeout 2" p2s_lab || { fail "$name: setup"; lab_cleanup; return; }
    local pid=${LAB_PIDS[-1]} ca="$LAB_WORK/hub-state/p2s/ca.crt.pem"
    local url; url=$(vgwc hub vnet-gateway vpn-client generate -o tsv)
    wait_for 5 in_ns site curl -sf --cacert "$ca" -o /dev/null "$url" || { fail "$name: first download"; lab_cleanup; return; }
    fds() { ls "/proc/$pid/fd" | wc -l; }
    rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
    local fd0 rss0; fd0=$(fds); rss0=$(rss)
    in_ns site ip addr add 198.18.0.10/24 dev e-hub
    (ulimit -n 8192; in_ns site timeout 30 python3 - >"$LAB_WORK/flood.out" 2>&1 <<'PY'
import socket, time, select
conns = []
for _ in range(3000):
    s = socket.socket(); s.bind(("198.18.0.10", 0)); s.setblocking(False)
    try: s.connect(("198.18.0.2", 8443))
    except BlockingIOError: pass
    conns.append(s)
open_ = set(conns); t0 = time.time(); last = 0.0
while open_ and time.time() - t0 < 6:
    _, _, _ = select.select([], [], [], 0.05)
    for s in list(open_):
        try:
            if s.recv(1) == b"": open_.discard(s); last = time.time() - t0
        except BlockingIOError: pass
        except OSError: open_.discard(s); last = time.time() - t0
print(f"client_side_open_after_6s={len(open_)} last_close_s={last:.1f}")
PY
) &
    local flood=$!
    sleep 1
    local fd1 rss1; fd1=$(fds); rss1=$(rss)
    local ok=0
    in_ns site curl -sf --max-time 5 --cacert "$ca" -o /dev/null "$url" && ok=1
    wait "$flood"
    sleep 1
    local fd2 rss2; fd2=$(fds); rss2=$(rss)
    local res; res=$(cat "$LAB_WORK/flood.out")
    local fig="fds $fd0 -> $fd1 (flood) -> $fd2; RSS kB $rss0 -> $rss1 -> $rss2; $res"
    [ "$ok" = 1 ] || { fail "$name: download failed during the flood ($fig)"; lab_cleanup; return; }
    # What the daemon holds: established sockets on its side of port 8443 (connections the kernel never
    # handed to it, because its accept queue was full, may linger on the client side; the daemon has none).
    local held; held=$(in_ns hub ss -Htn state established '( sport = :8443 )' | wc -l)
    fig="$fig; daemon-side established after the timeout: $held"
    [ "$held" = 0 ] || { fail "$name: connections stayed open on the daemon ($fig)"; lab_cleanup; return; }
    [ "$fd2" -le $((fd0 + 5)) ] || { fail "$name: descriptors did not come back ($fig)"; lab_cleanup; return; }
    [ "$rss2" -le $((rss0 + 20000)) ] || { fail "$name: RSS did not come back ($fig)"; lab_cleanup; return; }
    in_ns site curl -sf --max-time 5 --cacert "$ca" -o /dev/null "$url" || { fail "$name: download after the flood ($fig)"; lab_cleanup; return; }
    pass "$name ($fig)"
    lab_cleanup
}

all="connect refused profile wireguard download_limits"
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
for s in ${*:-$all}; do "scenario_$s"; done
summary
