#!/usr/bin/env python3
"""Writes the committed fuzz seeds (crates/*/fuzz/corpus/TARGET/*) from the strongSwan capture in
/work/shared/fixtures/strongswan-ikev2-psk (decrypted with its IKE SA keys) and from malformed
inputs shaped after published IKE vulnerabilities. Each seed's idea is in crates/ike/fuzz/corpus/README.md.
Needs python3-cryptography for the capture's AES-CBC. Run: python3 scripts/fuzz-seeds.py [FIXTURES_DIR]
"""
import os
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures/strongswan-ikev2-psk"

# payload types (RFC 7296 §3.2)
SA, KE, IDI, IDR, CERT, CERTREQ, AUTH, NONCE, N, D, V, TSI, TSR, SK, CP, EAP, SKF = (
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 53)


def write(crate, target, name, data):
    d = os.path.join(ROOT, "crates", crate, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


def udp_payloads():
    """(src port, dst port, payload) of every UDP datagram in the capture (Ethernet, IPv4)."""
    d = open(os.path.join(FIX, "ikev2-psk-libipsec.pcap"), "rb").read()
    off, out = 24, []
    while off + 16 <= len(d):
        _, _, incl, _ = struct.unpack("<IIII", d[off:off + 16])
        pkt = d[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = pkt[14:]
        if len(ip) < 20 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
        out.append((sport, dport, ip[ihl + 8:]))
    return out


def keys():
    line = open(os.path.join(FIX, "ikev2_decryption_table")).read().strip().split(",")
    return {"spi_i": line[0], "ei": bytes.fromhex(line[2]), "er": bytes.fromhex(line[3])}


def ike_messages():
    msgs = []
    for sport, dport, p in udp_payloads():
        if 4500 in (sport, dport):
            if p[:4] != b"\0\0\0\0":
                continue
            p = p[4:]
        msgs.append(p)
    return msgs


def decrypt(msg, k):
    """The inner chain of an AES-CBC/HMAC-SHA256-128 SK payload: (first payload type, bytes)."""
    if msg[0:8].hex() != k["spi_i"] or msg[16] != SK:
        return None
    initiator = msg[19] & 0x08 != 0
    key = k["ei"] if initiator else k["er"]
    sk = msg[28:]
    first, length = sk[0], struct.unpack(">H", sk[2:4])[0]
    body = sk[4:length]
    iv, ct = body[:16], body[16:-16]
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = dec.update(ct) + dec.finalize()
    return first, plain[: len(plain) - plain[-1] - 1]


def chain(plain, first):
    """[(type, whole payload bytes)] of an inner chain."""
    out, t, off = [], first, 0
    while t != 0 and off + 4 <= len(plain):
        ln = struct.unpack(">H", plain[off + 2:off + 4])[0]
        out.append((t, plain[off:off + ln]))
        t, off = plain[off], off + ln
    return out


def join(payloads):
    """Re-chains (type, payload bytes): next-payload fields rewritten."""
    out = b""
    for i, (_, p) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        out += bytes([nxt]) + p[1:]
    return out


def payload(next_type, body):
    return bytes([next_type, 0]) + struct.pack(">H", 4 + len(body)) + body


def record(tag, data):
    return bytes([tag]) + struct.pack(">H", len(data)) + data


def header(exchange, flags, mid, first, length, spi_i=b"\x11" * 8, spi_r=b"\0" * 8, version=0x20):
    return spi_i + spi_r + bytes([first, version, exchange, flags]) + struct.pack(">II", mid, length)


def main():
    k = keys()
    msgs = ike_messages()
    # ---- the capture ----------------------------------------------------------------------------
    for i, m in enumerate(msgs):
        write("ike", "message", f"strongswan-{i:02}", m)
        write("ike", "endpoint", f"strongswan-{i:02}", m)
    plain = {}
    for i, m in enumerate(msgs):
        r = decrypt(m, k)
        if r:
            plain[i] = r
    # message order in the capture: 0,1 IKE_SA_INIT; 2,3 IKE_AUTH; 4,5 CREATE_CHILD_SA (Child rekey);
    # 6,7 INFORMATIONAL (delete); later ones belong to the rekeyed IKE SA.
    auth_req, auth_resp = plain[2], plain[3]
    ccs_req, ccs_resp = plain[4], plain[5]
    info_req, info_resp = plain[6], plain[7]
    # variant byte: bit 0 AES-CBC (as the capture), bit 4 "harness prefixes a valid ID + AUTH"
    write("ike", "ike_auth_responder", "strongswan-ike-auth", bytes([0x01, auth_req[0]]) + auth_req[1])
    rest = [p for p in chain(auth_req[1], auth_req[0]) if p[0] not in (IDI, IDR, AUTH)]
    write("ike", "ike_auth_responder", "strongswan-after-auth", bytes([0x11, rest[0][0]]) + join(rest))
    write("ike", "ike_auth_initiator", "strongswan-ike-auth", bytes([0x01, auth_resp[0]]) + auth_resp[1])
    rest_r = [p for p in chain(auth_resp[1], auth_resp[0]) if p[0] not in (IDI, IDR, AUTH)]
    write("ike", "ike_auth_initiator", "strongswan-after-auth", bytes([0x11, rest_r[0][0]]) + join(rest_r))
    est = b"\x01"
    est += record(1, bytes([ccs_req[0]]) + ccs_req[1])
    est += record(0, bytes([info_req[0]]) + info_req[1])
    est += record(2, bytes([ccs_resp[0]]) + ccs_resp[1])
    est += record(3, bytes([info_resp[0]]) + info_resp[1])
    write("ike", "ike_established", "strongswan-rekey-delete", est)
    frag = b"\x01\x00"
    body = auth_req[1]
    third = (len(body) + 2) // 3
    parts = [body[i:i + third] for i in range(0, len(body), third)]
    for n, p in enumerate(parts):
        frag += record(0, bytes([n + 1, len(parts), auth_req[0] if n == 0 else 0]) + p)
    write("ike", "ike_fragments", "strongswan-ike-auth-3-fragments", frag)
    write("ike", "ike_fragments", "strongswan-after-auth-pieces", bytes([0x11, 48, rest[0][0]]) + join(rest))
    for i, (sport, dport, p) in enumerate(udp_payloads()):
        if dport == 4500 and p[:4] != b"\0\0\0\0":
            write("esp", "open", f"strongswan-esp-{i:02}", p)
            write("dataplane", "classify", f"strongswan-udp4500-{i:02}", b"\xb4" + p)
    write("dataplane", "classify", "nat-keepalive", b"\xb4\xff")

    # ---- shaped after published vulnerabilities (our own bytes) -----------------------------------
    # CVE-2020-1763 (libreswan): IKEv1 Informational with a truncated payload -> must be dropped.
    v1 = payload(0, b"\0\0\0\x01\x01\x10")[:6]
    m = header(5, 0, 0, 11, 28 + len(v1), version=0x10) + v1
    write("ike", "endpoint", "cve-2020-1763-ikev1-informational", m)
    write("ike", "message", "cve-2020-1763-ikev1-informational", m)
    # CVE-2023-30570 (libreswan): only unacceptable proposals and no KE -> NO_PROPOSAL_CHOSEN only.
    prop = bytes([0, 0]) + struct.pack(">H", 16) + bytes([1, 1, 0, 1]) + bytes([0, 0, 0, 8, 1, 0, 0, 99])
    sa = payload(NONCE, prop)
    nonce = payload(0, b"\x42" * 32)
    m = header(34, 0x08, 0, SA, 28 + len(sa) + len(nonce)) + sa + nonce
    write("ike", "endpoint", "cve-2023-30570-no-acceptable-proposal-no-ke", m)
    # CVE-2023-41913 (strongSwan charon-tkm): an oversized KE public value.
    ke = payload(NONCE, struct.pack(">HH", 31, 0) + b"\x09" * 1024)
    m = header(34, 0x08, 0, KE, 28 + len(ke) + len(nonce)) + ke + nonce
    write("ike", "endpoint", "cve-2023-41913-oversized-ke", m)
    ccs_ke = payload(NONCE, struct.pack(">HH", 31, 0) + b"\x09" * 2000) + payload(0, b"\x01" * 32)
    write("ike", "ike_established", "cve-2023-41913-oversized-ke-in-rekey", b"\x00" + record(1, bytes([KE]) + ccs_ke))
    # CVE-2023-38710 (libreswan): REKEY_SA notify with an invalid protocol id / SPI size.
    for proto, spi in ((0, b""), (255, b"\1\2\3\4"), (3, b"\1\2\3")):
        n = payload(0, bytes([proto, len(spi)]) + struct.pack(">H", 16393) + spi)
        write("ike", "ike_established", f"cve-2023-38710-rekey-sa-proto-{proto}-spi-{len(spi)}",
              b"\x00" + record(1, bytes([N]) + n))
    # CVE-2023-38711 (libreswan): a bogus ID (range type / empty) -> IKE_AUTH refused, no crash.
    for kind, data in ((7, b"\x0a\0\0\0\x0a\0\0\xff"), (1, b""), (9, b"\x30\x82\xff\xff")):
        idp = payload(AUTH, bytes([kind, 0, 0, 0]) + data) + payload(0, b"\x02\0\0\0" + b"\0" * 32)
        write("ike", "ike_auth_responder", f"cve-2023-38711-id-type-{kind}-len-{len(data)}", b"\x00" + bytes([IDI]) + idp)
    # CVE-2023-38712 (libreswan): Delete payloads with undefined protocol, wrong SPI size, count
    # larger than the data, and several deletes in one message.
    dels = payload(D, bytes([3, 4]) + struct.pack(">H", 200) + b"\1\2\3\4")
    dels += payload(D, bytes([9, 4]) + struct.pack(">H", 1) + b"\1\2\3\4")
    dels += payload(D, bytes([1, 8]) + struct.pack(">H", 1) + b"\1" * 8)
    dels += payload(0, bytes([3, 0]) + struct.pack(">H", 65535))
    write("ike", "ike_established", "cve-2023-38712-bogus-deletes", b"\x00" + record(0, bytes([D]) + dels))
    # CVE-2024-3652 (libreswan): an unknown authentication method -> AUTHENTICATION_FAILED.
    for method in (0, 201, 14):
        a = payload(0, bytes([method, 0, 0, 0]))
        write("ike", "ike_auth_responder", f"cve-2024-3652-auth-method-{method}", b"\x00" + bytes([AUTH]) + a)
    # CVE-2021-45079 (strongSwan): an EAP-Success in place of AUTH must not complete IKE_AUTH.
    eap = payload(0, b"\x03\x01\x00\x04")
    idr = payload(EAP, b"\x01\0\0\0" + bytes([198, 18, 0, 1]))
    write("ike", "ike_auth_initiator", "cve-2021-45079-early-eap-success", b"\x00" + bytes([IDR]) + idr + eap)
    # CP (libreswan CVE-2024-2357 area): malformed configuration payload after a valid AUTH.
    cp = payload(0, b"\x01\0\0\0" + struct.pack(">HH", 1, 0) + struct.pack(">HH", 1, 3) + b"\x0a\0")
    write("ike", "ike_auth_responder", "cp-request-truncated-attribute", b"\x10" + bytes([CP]) + cp)
    # TS with start > end and a TS count larger than the data.
    ts = payload(TSR, b"\x05\0\0\0" + bytes([7, 0]) + struct.pack(">HHH", 16, 0, 65535) + bytes([10, 2, 0, 0, 10, 1, 0, 0]))
    ts += payload(0, b"\x01\0\0\0" + bytes([7, 0]) + struct.pack(">HHH", 16, 0, 65535) + bytes([10, 2, 0, 0, 10, 2, 255, 255]))
    write("ike", "ike_auth_responder", "ts-reversed-range-overcount", b"\x10" + bytes([TSI]) + ts)
    # Fragments: number 0, number > total, total 0, duplicates, and a total that changes.
    f = b"\x00\x00"
    for num, tot in ((0, 2), (3, 2), (1, 0), (1, 2), (1, 2), (2, 3), (2, 2)):
        f += record(0, bytes([num, tot, IDI if num == 1 else 0]) + b"\x27\0\0\x08AAAA")
    write("ike", "ike_fragments", "rfc7383-bad-numbers-duplicates", f)
    # GSO: a TCPv4 super-packet (virtio_net_hdr + IP + TCP + 3000 bytes), gso_size 1000.
    ip = bytes([0x45, 0, 0x0b, 0xe8, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1])
    tcp = struct.pack(">HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x18, 65535, 0, 0)
    vnet = bytes([1, 1]) + struct.pack("<HHHH", 40, 1000, 20, 16)
    write("dataplane", "offload", "gso-tcpv4-3-segments", b"\x20" + vnet + ip + tcp + b"x" * 3000)
    vnet_bad = bytes([1, 1]) + struct.pack("<HHHH", 40, 0, 20, 16)
    write("dataplane", "offload", "gso-size-zero", b"\x20" + vnet_bad + ip + tcp + b"x" * 100)
    write("dataplane", "offload", "plain-needs-csum", b"\x20" + bytes([1, 0]) + struct.pack("<HHHH", 0, 0, 20, 16) + ip[:2] + b"\x00\x28" + ip[4:] + tcp)
    syn = struct.pack(">HHIIBBHHH", 1234, 80, 1, 0, 0x60, 0x02, 65535, 0, 0) + b"\x02\x04\x05\xb4"
    write("dataplane", "classify", "tcp-syn-mss-1460", b"\xa0" + ip[:2] + b"\x00\x2c" + ip[4:] + syn)
    # BGP UPDATE attributes: ORIGIN, AS_PATH (AS_SEQUENCE 65001 65002), NEXT_HOP; and a malformed one.
    attrs = bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 10, 2, 2]) + struct.pack(">II", 65001, 65002)
    attrs += bytes([0x40, 3, 4, 198, 18, 0, 1])
    write("bgp", "update_attributes", "origin-aspath4-nexthop", b"\x03" + attrs)
    write("bgp", "update_attributes", "aspath-overlong-segment", b"\x03" + bytes([0x40, 1, 1, 0, 0x40, 2, 4, 2, 200, 0, 1]))
    mp = bytes([0x90, 14]) + struct.pack(">H", 22) + struct.pack(">HBB", 2, 1, 16) + b"\xfd" + b"\0" * 15 + bytes([0, 0])
    write("bgp", "update_attributes", "mp-reach-ipv6-no-nlri", b"\x01" + bytes([0x40, 1, 1, 0]) + mp)
    # Control: an apply document and API bodies.
    doc = b"""apiVersion: vgw/v1
virtualNetworkGateway:
  name: gw1
  properties:
    gatewayType: Vpn
    vpnType: RouteBased
    sku: {name: VpnGw1, tier: VpnGw1}
localNetworkGateways:
  - name: site1
    properties:
      gatewayIpAddress: 198.18.0.1
      localNetworkAddressSpace: {addressPrefixes: [10.1.0.0/16]}
connections:
  - name: c1
    properties:
      connectionType: IPsec
      sharedKey: abc123
"""
    write("control", "apply_document", "minimal.yaml", doc)
    write("control", "apply_document", "alias-bomb.yaml", b"a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n")
    write("control", "apply_document", "deep.json", b"[" * 200 + b"]" * 200)
    write("control", "api_json", "local-gateway", b"\x01" + b'{"name":"site1","properties":{"gatewayIpAddress":"198.18.0.1","localNetworkAddressSpace":{"addressPrefixes":["10.1.0.0/16"]}}}')
    write("control", "api_json", "connection", b"\x02" + b'{"name":"c1","properties":{"connectionType":"IPsec","sharedKey":"abc","ipsecPolicies":[{"saLifeTimeSeconds":3600,"ipsecEncryption":"GCMAES256","ikeEncryption":"AES256","dhGroup":"DHGroup14","pfsGroup":"None"}]}}')
    write("control", "api_json", "gateway", b"\x00" + b'{"name":"gw1","properties":{"gatewayType":"Vpn","sku":{"name":"VpnGw1"},"bgpSettings":{"asn":65515}}}')


if __name__ == "__main__":
    main()
