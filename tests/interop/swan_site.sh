# The standard site-to-site lab for the interop tests: strongSwan on the site router, vgw on the hub.
#   sitelan 10.1.0.0/16 - site (charon) - internet 198.18.0.0/24 - hub (vgw) - hublan 10.2.0.0/16
# Sourced after lib.sh; defines the addresses, the site's swanctl.conf, the hub's resources and the
# traffic checks.
# shellcheck shell=bash

PSK="InteropPsk0123456789abcdef"
VGW_IP=198.18.0.2
SITE_IP=198.18.0.1

# site_conf IKE_PROPOSALS ESP_PROPOSALS START_ACTION [extra child lines] [extra conn lines]
site_conf() {
    mkdir -p "$LAB_WORK/site"
    cat >"$LAB_WORK/site/swanctl.conf" <<EOF
connections {
    hub {
        version = 2
        local_addrs = ${SITE_LOCAL:-$SITE_IP}
        remote_addrs = $VGW_IP
        proposals = $1
        dpd_delay = 5s
        ${5:-}
        local { auth = psk
                id = $SITE_IP }
        remote { auth = psk
                 id = $VGW_IP }
        children {
            net {
                local_ts = ${SITE_TS:-10.1.0.0/16}
                remote_ts = ${HUB_TS:-10.2.0.0/16}
                esp_proposals = $2
                start_action = $3
                dpd_action = restart
                ${4:-}
            }
        }
    }
}
secrets {
    ike-hub {
        id-1 = $SITE_IP
        id-2 = $VGW_IP
        secret = "${SITE_PSK:-$PSK}"
    }
}
EOF
}

# hub_conf MODE [policy flags...]
hub_conf() {
    local mode=$1; shift
    # shellcheck disable=SC2086 # HUB_SPACE/SITE_SPACE may list several prefixes
    vgwc hub vnet-gateway create -n hub-gw --public-ip-addresses $VGW_IP --vnet-address-space ${HUB_SPACE:-10.2.0.0/16} -o none
    # shellcheck disable=SC2086
    vgwc hub local-gateway create -n site --gateway-ip-address $SITE_IP --local-address-prefixes ${SITE_SPACE:-10.1.0.0/16} -o none
    vgwc hub vpn-connection create -n to-site --local-gateway2 site --shared-key "$PSK" --connection-mode "$mode" \
        --dpd-timeout-seconds "${DPD:-45}" -o none
    if [ $# -gt 0 ]; then
        vgwc hub vpn-connection ipsec-policy add --connection-name to-site "$@" -o none
    fi
}

traffic_ok() {
    in_ns sitelan ping -c 2 -i 0.2 -W 1 10.2.0.10 >/dev/null && in_ns hublan ping -c 2 -i 0.2 -W 1 10.1.0.10 >/dev/null || return 1
    if [ "${IPV6:-0}" = 1 ]; then
        in_ns sitelan ping -6 -c 2 -i 0.2 -W 1 2001:db8:2::10 >/dev/null && in_ns hublan ping -6 -c 2 -i 0.2 -W 1 2001:db8:1::10 >/dev/null
    fi
}

# Sends 100 MB over TCP from sitelan to hublan (to BULK_DST, 10.2.0.10 by default) and compares
# checksums.
bulk_ok() {
    local out="$LAB_WORK/recv.bin"
    head -c 100000000 /dev/urandom >"$LAB_WORK/send.bin"
    local family=-4
    case "${BULK_DST:-}" in *:*) family=-6 ;; esac
    in_ns hublan timeout 60 sh -c "exec 3<>/dev/null; nc $family -l -p 5001 >$out" 2>/dev/null &
    local listener=$!
    sleep 0.3
    in_ns sitelan timeout 60 sh -c "nc -q 1 -w 5 ${BULK_DST:-10.2.0.10} 5001 <$LAB_WORK/send.bin" 2>/dev/null
    wait $listener
    [ "$(sha256sum <"$LAB_WORK/send.bin" | cut -d' ' -f1)" = "$(sha256sum <"$out" | cut -d' ' -f1)" ]
}

