#!/usr/bin/env python3
"""Sends forged, unauthenticated IKEv2 datagrams to a gateway, as an off-path attacker would.

Usage: forge_ike.py SOURCE_IP TARGET_IP SPI_I SPI_R

SOURCE_IP is the address the datagrams claim (bound with an ephemeral port: the real peer holds 500
and 4500); SPI_I and SPI_R (16 hex digits each) are the SPIs of the established IKE SA, which anyone on
the path can read from its headers. Sent to TARGET_IP:
  1. an IKE_SA_INIT request with a proposal the target refuses (3DES, HMAC-SHA1, MODP-1024);
  2. an IKE_SA_INIT "response" with NO_PROPOSAL_CHOSEN carrying the established SA's SPI_I;
  3. INFORMATIONAL requests with the established SA's SPIs and an SK payload not protected with its keys
     (a forged DELETE), at message IDs 0-3, on 4500 (with the non-ESP marker) and on 500;
  4. an INFORMATIONAL for an IKE SA nobody has;
  5. 13 bytes of garbage.
RFC 7296 section 2.21: none of them may change the state of the established SA or its connection.
"""

import os
import socket
import struct
import sys

IKE_SA_INIT, INFORMATIONAL = 34, 37
SA, KE, NONCE, NOTIFY, DELETE, SK = 33, 34, 40, 41, 42, 46
FLAG_INITIATOR, FLAG_RESPONSE = 0x08, 0x20
NO_PROPOSAL_CHOSEN = 14


def header(spi_i, spi_r, first, exchange, flags, message_id, body_len):
    return struct.pack("!QQBBBBII", spi_i, spi_r, first, 0x20, exchange, flags, message_id, 28 + body_len)


def payloads(chain):
    """chain: list of (type, body); returns (first type, bytes) with the next-payload fields set."""
    out = b""
    for i, (_, body) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        out += struct.pack("!BBH", nxt, 0, 4 + len(body)) + body
    return (chain[0][0] if chain else 0), out


def message(spi_i, spi_r, exchange, flags, message_id, chain):
    first, body = payloads(chain)
    return header(spi_i, spi_r, first, exchange, flags, message_id, len(body)) + body


def weak_sa():
    transforms = [(1, 3), (2, 2), (3, 2), (4, 2)]  # ENCR_3DES, PRF_HMAC_SHA1, AUTH_HMAC_SHA1_96, MODP-1024
    body = b""
    for i, (kind, ident) in enumerate(transforms):
        more = 3 if i + 1 < len(transforms) else 0
        body += struct.pack("!BBHBBH", more, 0, 8, kind, 0, ident)
    proposal = struct.pack("!BBHBBBB", 0, 0, 8 + len(body), 1, 1, 0, len(transforms)) + body
    return proposal


def main():
    src, dst, spi_i, spi_r = sys.argv[1], sys.argv[2], int(sys.argv[3], 16), int(sys.argv[4], 16)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    sent = 0

    def send(data, port, marker=False):
        nonlocal sent
        sock.sendto((b"\0\0\0\0" if marker else b"") + data, (dst, port))
        sent += 1

    init = message(
        int.from_bytes(os.urandom(8), "big"), 0, IKE_SA_INIT, FLAG_INITIATOR, 0,
        [(SA, weak_sa()), (KE, struct.pack("!HH", 2, 0) + os.urandom(128)), (NONCE, os.urandom(32))],
    )
    send(init, 500)
    send(init, 500)  # a retransmission
    error = message(spi_i, 0, IKE_SA_INIT, FLAG_RESPONSE, 0,
                    [(NOTIFY, struct.pack("!BBH", 0, 0, NO_PROPOSAL_CHOSEN))])
    send(error, 500)
    for message_id in range(4):
        # The SK payload's first inner payload is DELETE; its content is random (no keys).
        body = os.urandom(60)
        sk = struct.pack("!BBH", DELETE, 0, 4 + len(body)) + body
        forged = header(spi_i, spi_r, SK, INFORMATIONAL, 0, message_id, len(sk)) + sk
        send(forged, 4500, marker=True)
        send(forged, 500)
    unknown = message(0xDEADBEEF00000001, 0xDEADBEEF00000002, INFORMATIONAL, FLAG_INITIATOR, 5,
                      [(SK, os.urandom(48))])
    send(unknown, 4500, marker=True)
    send(b"\xff" * 13, 500)
    print(f"sent {sent} forged datagrams from {src} to {dst}")


if __name__ == "__main__":
    main()
