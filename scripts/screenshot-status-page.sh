#!/usr/bin/env bash
# Captures vgw's status page with headless Chromium: the DOM after the page's script has run, and a
# 1280x900 PNG screenshot.
#
#   scripts/screenshot-status-page.sh URL OUT_PNG [OUT_DOM]
#
# URL is the status page (e.g. http://127.0.0.1:9601/ from `vgw serve --metrics-listen 127.0.0.1:9601`).
# The DOM goes to OUT_DOM, or to stdout when OUT_DOM is absent or "-". Needs /usr/bin/chromium
# (Debian: apt-get install -y chromium); set CHROMIUM to use another binary. Each Chromium run is
# bounded by TIMEOUT seconds (default 60); SHOT_BUDGET_MS is the page's virtual time before the
# screenshot (default 20000, about ten polls). Exits non-zero if Chromium fails or writes nothing.
set -euo pipefail

usage() {
    echo "usage: $0 URL OUT_PNG [OUT_DOM]" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
url=$1
out_png=$2
out_dom=${3:--}
chromium=${CHROMIUM:-/usr/bin/chromium}
limit=${TIMEOUT:-60}

if [ ! -x "$chromium" ]; then
    echo "$chromium not found; install it with: apt-get install -y chromium" >&2
    exit 1
fi

profile=$(mktemp -d)
dom_tmp=$(mktemp)
trap 'rm -rf "$profile" "$dom_tmp"' EXIT

# Headless, and quiet on the network: without the background-networking flags Chromium phones home at
# start-up, which a closed network refuses. --no-sandbox is needed when running as root.
flags=(
    --headless
    --disable-gpu
    --disable-quic
    --no-first-run
    --no-default-browser-check
    --disable-background-networking
    --disable-component-update
    --disable-sync
    --disable-extensions
    --hide-scrollbars
    --user-data-dir="$profile"
)
if [ "$(id -u)" = 0 ]; then
    flags+=(--no-sandbox)
fi

# (a) The DOM once the script has polled /status.json (virtual time lets its timers run).
if ! timeout "$limit" "$chromium" "${flags[@]}" --virtual-time-budget=5000 --dump-dom "$url" \
    >"$dom_tmp" 2>"$profile/dump.log"; then
    echo "chromium --dump-dom failed for $url:" >&2
    tail -n 20 "$profile/dump.log" >&2
    exit 1
fi
if [ ! -s "$dom_tmp" ]; then
    echo "chromium --dump-dom wrote nothing for $url" >&2
    exit 1
fi
if [ "$out_dom" = - ]; then
    cat "$dom_tmp"
else
    cp "$dom_tmp" "$out_dom"
fi

# (b) The screenshot, after about ten polls so the throughput charts have a line. Virtual time runs the
# 2 s poll timer without waiting for it, so this takes well under the budget in real time.
rm -f "$out_png"
if ! timeout "$limit" "$chromium" "${flags[@]}" --window-size=1280,900 \
    --virtual-time-budget="${SHOT_BUDGET_MS:-20000}" \
    --screenshot="$out_png" "$url" >"$profile/shot.log" 2>&1; then
    echo "chromium --screenshot failed for $url:" >&2
    tail -n 20 "$profile/shot.log" >&2
    exit 1
fi
if [ ! -s "$out_png" ]; then
    echo "chromium wrote no screenshot to $out_png" >&2
    exit 1
fi
echo "screenshot: $out_png" >&2
