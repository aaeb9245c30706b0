#!/usr/bin/env bash
# The timeline of a networked persist and attach (docs/benchmarks.md,
# "Where the 50 ms persist and attach wait"): `strata serve` behind the
# latency proxy (RTT_MS of round trip, half each way) writing every
# exchange to a log (STRATA_PROXY_LOG), the benchmark's four steps run with
# `--progress json` and their stderr stamped (bench/timeline.py), then each
# step's exchanges and the client's progress on one clock. The stat cache
# is cold for every persist, as in bench/profile_rtt.sh.
#   cargo build --release -p strata-cli -p strata-proxy
#   bench/timeline.sh BASE_TREE NEXT_TREE [RTT_MS]
# e.g. bench/timeline.sh ~/.cache/strata-bench/nextjs/*/{base,next}/node_modules 50
set -euo pipefail
base=$(realpath "$1")
next=$(realpath "$2")
rtt=${3:-50}
here=$(dirname "$(realpath "$0")")
S=$(realpath "${STRATA:-target/release/strata}")
P=$(realpath "${STRATA_PROXY:-target/release/strata-proxy}")
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-timeline.XXXXXX")
server=""
proxy=""
trap 'kill $server $proxy 2>/dev/null; rm -rf "$work"' EXIT
"$S" --store "$work/srv" --cache-dir "$work/srv-meta" serve --listen 127.0.0.1:0 --quiet \
  2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
up=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/serve.log" | head -1)
STRATA_PROXY_LOG="$work/exchanges.jsonl" "$P" "$up" --one-way-ms "$(python3 -c "print($rtt/2)")" \
  >"$work/proxy.addr" &
proxy=$!
for _ in $(seq 100); do [ -s "$work/proxy.addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/proxy.addr")/bench"
# step NAME CACHE-DIR -- strata args...: one stamped command, then its timeline.
step() {
  local name=$1 cache=$2
  shift 3
  python3 "$here/timeline.py" run "$work/$name.json" -- \
    "$S" --store "$url" --cache-dir "$cache" --progress json "$@"
  sleep 0.5 # the proxy writes a connection's last exchange when it closes
  echo "## $name (rtt $rtt ms, load $(cut -d' ' -f1 /proc/loadavg))"
  python3 "$here/timeline.py" show "$work/$name.json" "$work/exchanges.jsonl"
  echo
}
"$S" --store "$url" run create --run r1 --job build --job test:build >/dev/null
step persist-first "$work/c-p1" -- persist --run r1 --job build --root "$(dirname "$base")" "$(basename "$base")"
step attach-fresh "$work/c-at" -- attach --run r1 --job test --at "$work/at"
"$S" --store "$url" run create --run r2 --job build --job test:build >/dev/null
step persist-next "$work/c-p2" -- persist --run r2 --job build --root "$(dirname "$next")" "$(basename "$next")"
step attach-warm "$work/c-at" -- attach --run r2 --job test --at "$work/at"
