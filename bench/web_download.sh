#!/usr/bin/env bash
# The web page's download path against `strata attach`, for the same layer
# (issue 32; docs/deploy.md, "The web page"). A loopback `strata serve`
# holds one layer of FILES files of 1 MiB (half random, half text); then,
# ROUNDS times, alternating: the page's `.tar.zst` of the whole layer
# (curl, to /dev/null) and an attach of it with a cold runner cache into a
# fresh directory. Prints the wall and CPU (user+sys) of each, the
# server's CPU for each, and the bytes each received.
#
#   bench/web_download.sh target/release/strata [FILES] [ROUNDS]
set -euo pipefail
bin=$(realpath "$1")
files=${2:-128}
rounds=${3:-3}
work=$(mktemp -d /tmp/strata-web-download.XXXXXX)
server=
trap 'kill "$server" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
mkdir -p "$work/src/out"
for i in $(seq 1 "$files"); do
  if [ $((i % 2)) -eq 0 ]; then
    head -c 1048576 /dev/urandom > "$work/src/out/f$i.bin"
  else
    # seq is cut off by head: its SIGPIPE is expected.
    (seq "$((i * 100000))" "$((i * 100000 + 200000))" || true) | head -c 1048576 > "$work/src/out/f$i.txt"
  fi
done
"$bin" serve --store "$work/srv" --listen "127.0.0.1:$port" 2> "$work/serve.log" &
server=$!
for _ in $(seq 1 100); do
  grep -q "listening on" "$work/serve.log" && break
  sleep 0.1
done
store="http://127.0.0.1:$port/team"
"$bin" --store "$store" run create --run r --job build --job test:build > /dev/null
"$bin" --store "$store" --cache-dir "$work/cache-persist" persist --run r --job build \
  --root "$work/src" out > /dev/null
layer=$(curl -s "http://127.0.0.1:$port/ui/ns/team/run/r" | grep -o '/ui/ns/team/layer/[0-9a-f]*' | head -1)
tar_url="http://127.0.0.1:$port${layer/\/layer\//\/tar\/}?path="
# The server's CPU seconds so far (utime + stime, in clock ticks).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$server/stat"; }
echo "layer: $files files of 1 MiB; server load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  before=$(server_cpu)
  /usr/bin/time -f "%e %U %S" -o "$work/t" \
    curl -s -o "$work/layer.tar.zst" -w '%{size_download}\n' "$tar_url" > "$work/bytes"
  read -r wall user sys < "$work/t"
  echo "round $r page .tar.zst: wall ${wall}s, curl cpu $(echo "$user + $sys" | bc)s, received $(cat "$work/bytes") B, server cpu $(echo "$(server_cpu) - $before" | bc)s"
  rm -f "$work/layer.tar.zst"
  before=$(server_cpu)
  /usr/bin/time -f "%e %U %S" -o "$work/t" \
    "$bin" --json --store "$store" --cache-dir "$work/cache-$r" attach --run r --job test \
    --at "$work/at-$r" > "$work/attach.json" 2> "$work/attach.log"
  read -r wall user sys < "$work/t"
  got=$(grep -o '"received": *[0-9]*' "$work/attach.json" | head -1 | grep -o '[0-9]*$')
  echo "round $r attach (cold cache): wall ${wall}s, cpu $(echo "$user + $sys" | bc)s, received ${got:-?} B, server cpu $(echo "$(server_cpu) - $before" | bc)s"
done
