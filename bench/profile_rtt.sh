#!/usr/bin/env bash
# Where the time of a networked persist and attach goes (docs/benchmarks.md,
# "Where the time goes at a round trip"): `strata serve` behind the latency
# proxy (RTT_MS of round trip, half each way), the four steps of the
# benchmark, each timed for wall, the client's CPU (user+sys), the
# server's CPU (from /proc) and the client's count of requests and round
# trips. The runner's stat cache is cold for every persist (a fresh
# --cache-dir, as on a hosted runner); the warm attach keeps the fresh
# attach's runner cache and tree, as one machine would.
#   cargo build --release -p strata-cli -p strata-proxy
#   bench/profile_rtt.sh BASE_TREE NEXT_TREE [RTT_MS]
# e.g. the nextjs corpus as strata-bench materializes it:
#   bench/profile_rtt.sh ~/.cache/strata-bench/nextjs/*/{base,next}/node_modules 50
set -euo pipefail
base=$(realpath "$1")
next=$(realpath "$2")
rtt=${3:-50}
S=$(realpath "${STRATA:-target/release/strata}")
P=$(realpath "${STRATA_PROXY:-target/release/strata-proxy}")
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-profile.XXXXXX")
server=""
proxy=""
trap 'kill $server $proxy 2>/dev/null; rm -rf "$work"' EXIT
"$S" --store "$work/srv" --cache-dir "$work/srv-meta" serve --listen 127.0.0.1:0 --quiet \
  2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
up=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/serve.log" | head -1)
"$P" "$up" --one-way-ms "$(python3 -c "print($rtt/2)")" >"$work/proxy.addr" &
proxy=$!
for _ in $(seq 100); do [ -s "$work/proxy.addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/proxy.addr")/bench"
server_cpu() { awk '{print ($14+$15)/100}' "/proc/$server/stat"; }
# step NAME CACHE-DIR -- strata args...: one timed command and its line.
step() {
  local name=$1 cache=$2
  shift 3
  local before after
  before=$(server_cpu)
  /usr/bin/time -f "%e %U %S" -o "$work/time" \
    "$S" --store "$url" --cache-dir "$cache" --json "$@" >"$work/out.json" 2>"$work/err"
  after=$(server_cpu)
  python3 - "$name" "$work/time" "$work/out.json" "$before" "$after" <<'PY'
import json, sys
name, timef, outf, before, after = sys.argv[1:]
wall, user, sys_ = map(float, open(timef).read().split()[-3:])
net = json.load(open(outf))["network"]
print(f"| {name} | {wall:.2f} | {user + sys_:.2f} | {float(after) - float(before):.2f} "
      f"| {net['requests']} | {net['round_trips']} | {net['sent'] / 1e6:.1f} | {net['received'] / 1e6:.1f} |")
PY
}
echo "rtt $rtt ms: $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo "| step | wall s | client CPU s | server CPU s | requests | round trips | sent MB | received MB |"
echo "|---|---|---|---|---|---|---|---|"
"$S" --store "$url" run create --run r1 --job build --job test:build >/dev/null
step "persist first" "$work/c-p1" -- persist --run r1 --job build --root "$(dirname "$base")" "$(basename "$base")"
step "attach fresh" "$work/c-at" -- attach --run r1 --job test --at "$work/at"
"$S" --store "$url" run create --run r2 --job build --job test:build >/dev/null
step "persist next" "$work/c-p2" -- persist --run r2 --job build --root "$(dirname "$next")" "$(basename "$next")"
step "attach warm" "$work/c-at" -- attach --run r2 --job test --at "$work/at"
