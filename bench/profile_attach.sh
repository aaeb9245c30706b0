#!/usr/bin/env bash
# Where a fresh attach spends its CPU (docs/benchmarks.md, "The warm attach in
# four round trips"): the same layer attached from a local directory store and
# through `strata serve` on loopback, each under `perf record` (a flat profile
# by thread and symbol), with wall, user and sys from /usr/bin/time, the
# server's CPU from /proc and the server sampled too.
#   cargo build --release -p strata-cli
#   bench/profile_attach.sh BASE_TREE   (e.g. the nextjs base node_modules)
set -euo pipefail
base=$(realpath "$1")
S=$(realpath "${STRATA:-target/release/strata}")
W=$(mktemp -d "${TMPDIR:-/tmp}/strata-profile-attach.XXXXXX")
echo "profiles kept in $W (remove it when done)"
$S --store $W/srv --cache-dir $W/srv-meta serve --listen 127.0.0.1:0 --quiet 2>$W/serve.log &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q "listening on" $W/serve.log 2>/dev/null && break; sleep 0.1; done
up=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' $W/serve.log | head -1)
url=http://$up/p
$S --store $url run create --run r1 --job build --job test:build >/dev/null
$S --store $url --cache-dir $W/c-p persist --run r1 --job build --root "$(dirname "$base")" "$(basename "$base")" >/dev/null
sync
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in local http; do
  case $mode in local) store=$W/srv/p;; http) store=$url;; esac
  cpu0=$(awk '{print ($14+$15)/100}' /proc/$server/stat)
  if [ $mode = http ]; then perf record -q -F 499 -p $server -o $W/server.perf 2>/dev/null & pp=$!; sleep 0.5; fi
  /usr/bin/time -f "$mode wall %e user %U sys %S" -o $W/$mode.time \
    perf record -q -F 499 -o $W/$mode.perf -- $S --store $store --cache-dir $W/c-$mode --json attach --run r1 --job test --at $W/at-$mode > $W/$mode.json 2>/dev/null
  cpu1=$(awk '{print ($14+$15)/100}' /proc/$server/stat)
  if [ $mode = http ]; then kill -INT $pp; wait $pp || true; fi
  cat $W/$mode.time; echo "server cpu during: $(python3 -c "print(round($cpu1-$cpu0,2))")"
  python3 -c "import json;d=json.load(open('$W/$mode.json'));print({k:d[k] for k in ('network','seconds')})"
  rm -rf $W/at-$mode
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for f in local http server; do
  echo "== $f: by thread name"; perf report -i $W/$f.perf --no-children --sort comm --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -12
  echo "== $f: top symbols"; perf report -i $W/$f.perf --no-children --sort dso,sym --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -25
done
