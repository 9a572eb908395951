#!/usr/bin/env python3
"""Reads `ping -D -O -i INTERVAL` output and says how much of the stream was lost in each phase.

Usage: pingloss.py PING_OUTPUT INTERVAL_S CUT_TS RESTORE_TS END_TS
Timestamps are Unix seconds (date +%s.%N). Prints `failover_ms=N restore_ms=N sent=N lost=N`: the
probes lost that were sent between the cut and the restore, and between the restore and END_TS - 1 s
(probes sent in the last second may still have been in flight when ping stopped).
"""
import re
import sys


def main() -> None:
    path, interval, cut, restore, end = sys.argv[1], *map(float, sys.argv[2:6])
    replied, first_seen = set(), {}
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"\[(\d+\.\d+)\] .*icmp_seq=(\d+)", line)
        if not m:
            continue
        ts, seq = float(m.group(1)), int(m.group(2))
        if "no answer yet" in line:
            # Printed when the next probe leaves: this probe left one interval earlier.
            first_seen.setdefault(seq, ts - interval)
        elif "bytes from" in line:
            replied.add(seq)
            first_seen.setdefault(seq, ts)
    if not first_seen:
        print("failover_ms=-1 restore_ms=-1 sent=0 lost=0")
        return
    lost = [seq for seq in first_seen if seq not in replied]
    in_cut = [s for s in lost if cut <= first_seen[s] < restore]
    in_restore = [s for s in lost if restore <= first_seen[s] < end - 1.0]
    ms = int(interval * 1000)
    print(f"failover_ms={len(in_cut) * ms} restore_ms={len(in_restore) * ms} "
          f"sent={max(first_seen) + 1} lost={len(lost)}")


if __name__ == "__main__":
    main()
