#!/usr/bin/env bash
# Counts requests and round trips on the critical path of persist and
# attach against a local `strata serve` through the latency proxy, 25 ms
# each way (docs/protocol.md's table):
#   cargo build -p strata-cli -p strata-proxy && bench/round_trips.sh
# Trees of 128 and 512 random 256 KiB files; the next run changes 1%.
# (Without delay every request ends before the next starts, so each one
# counts: round trips are what a real link's latency costs.)
set -euo pipefail
S=${STRATA:-target/debug/strata}
P=${STRATA_PROXY:-target/debug/strata-proxy}
ONE_WAY_MS=${ONE_WAY_MS:-25}
work=$(mktemp -d)
trap 'kill $server $proxy 2>/dev/null; rm -rf "$work"' EXIT
"$S" --store "$work/srv" serve --listen 127.0.0.1:18429 >"$work/serve.log" 2>&1 &
server=$!
"$P" 127.0.0.1:18429 --one-way-ms "$ONE_WAY_MS" >"$work/proxy.addr" &
proxy=$!
sleep 2
addr=$(cat "$work/proxy.addr")
gen() { python3 - "$@" <<'PY'
import os, random, sys
root, n, change = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
os.makedirs(root, exist_ok=True)
r = random.Random(2)
for i in range(n):
    if change == 0 or r.random() < change:
        open(os.path.join(root, f"f{i:05}.bin"), "wb").write(os.urandom(256 << 10))
PY
}
net() { python3 -c 'import json,sys; n=json.load(sys.stdin)["network"]; print(n["requests"], "/", n["round_trips"])'; }
echo "| tree | persist first | persist next (1% changed) | attach fresh | attach warm |"
echo "|---|---|---|---|---|"
for n in 128 512; do
  st=(--store "http://$addr/ns$n" --cache-dir "$work/cache$n" --json)
  gen "$work/t$n/out" "$n" 0
  "$S" "${st[@]}" run create --run r --job build --job test:build >/dev/null
  p1=$("$S" "${st[@]}" persist --run r --job build --root "$work/t$n" out | net)
  gen "$work/t$n/out" "$n" 0.01
  "$S" "${st[@]}" run create --run r2 --job build --job test:build >/dev/null
  p2=$("$S" "${st[@]}" persist --run r2 --job build --root "$work/t$n" out | net)
  a1=$("$S" "${st[@]}" attach --run r --job test --at "$work/a$n" | net)
  a2=$("$S" "${st[@]}" attach --run r2 --job test --at "$work/a$n" | net)
  echo "| $((n / 4)) MiB, $n files | $p1 | $p2 | $a1 | $a2 |"
done
