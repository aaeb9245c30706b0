#!/usr/bin/env bash
# A/B of a next-run persist through the latency proxy (docs/benchmarks.md,
# "Where the 50 ms persist and attach wait"): one `strata serve` behind two
# proxies (0 and RTT_MS); each run a fresh namespace holding only the base
# layer, then the next tree persisted with a cold stat cache by the OLD
# build at RTT_MS, the NEW one at RTT_MS and the NEW one on loopback, N
# rounds alternated. Prints, per run: wall, CPU, when reading ended and the
# last chunk query was answered (ms), the exchanges, the proxy's
# sequential count, the pack PUTs, the most queries in flight and the
# exchanges after the queries.
#   OLD=/tmp/old/strata NEW=target/release/strata N=3 bench/persist_next_ab.sh BASE NEXT [RTT_MS]
set -euo pipefail
base=$(realpath "$1")
next=$(realpath "$2")
rtt=${3:-50}
here=$(dirname "$(realpath "$0")")
NEW=$(realpath "${NEW:-target/release/strata}")
OLD=$(realpath "${OLD:?the old build}")
P=$(realpath "${STRATA_PROXY:-target/release/strata-proxy}")
N=${N:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-ab.XXXXXX")
trap 'kill $server $p0 $p50 2>/dev/null; rm -rf "$work"' EXIT
$NEW --store "$work/srv" --cache-dir "$work/srv-meta" serve --listen 127.0.0.1:0 --quiet 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
up=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/serve.log" | head -1)
STRATA_PROXY_LOG=$work/x0.jsonl $P "$up" --one-way-ms 0 >"$work/p0" & p0=$!
STRATA_PROXY_LOG=$work/xX.jsonl $P "$up" --one-way-ms "$(python3 -c "print($rtt/2)")" >"$work/p50" & p50=$!
sleep 0.5
u0="http://$(cat $work/p0)/"; uX="http://$(cat $work/p50)/"
for i in $(seq $N); do for v in old-$rtt new-$rtt new-0; do
  ns=n$i${v//-/}
  $NEW --store "$u0$ns" run create --run r1 --job build >/dev/null
  $NEW --store "$u0$ns" --cache-dir $work/cb --progress none persist --run r1 --job build --root "$(dirname "$base")" "$(basename "$base")" >/dev/null
  rm -rf $work/cb; sleep 1
  S=$NEW; [ ${v%-*} = old ] && S=$OLD
  u=$uX$ns; x=$work/xX.jsonl; [ ${v#*-} = 0 ] && { u=$u0$ns; x=$work/x0.jsonl; }
  $S --store "$u" run create --run r2 --job build >/dev/null
  python3 "$here/timeline.py" run $work/rec.json -- /usr/bin/time -f "%U %S" -o $work/time $S --store "$u" --cache-dir $work/c-$ns --progress json persist --run r2 --job build --root "$(dirname "$next")" "$(basename "$next")" || true
  sleep 0.3
  python3 - $work/rec.json $x $v "$(cut -d' ' -f1 /proc/loadavg)" "$(tail -1 $work/time)" <<'PY'
import json,sys
rec=json.load(open(sys.argv[1])); t0,t1=rec['start'],rec['end']
ex=[json.loads(l) for l in open(sys.argv[2])]; ex=[e for e in ex if t0<=e['start_us']/1e6<=t1]
q=[e for e in ex if 'missing' in e['request']]
full=[t for t,l in rec['stderr'] if '"percent":100' in l.replace(' ','')]
ms=lambda t:round((t-t0)*1e3)
puts=sum(1 for e in ex if e['request'].startswith('PUT ') and '/o/packs/' in e['request'])
chain, last = 0, None
for e in sorted(ex, key=lambda e: e['end_us']):
    if last is None or e['start_us'] > last: chain += 1; last = e['end_us']
ev=sorted([(e['start_us'],1) for e in q]+[(e['end_us'],-1) for e in q]); c=m=0
for _,d in ev: c+=d; m=max(m,c)
lastq=max(e['end_us'] for e in q)/1e6
u,s=map(float,sys.argv[5].split())
tl=[(e['request'][:24],ms(e['start_us']/1e6),ms(e['end_us']/1e6)) for e in ex if 'missing' not in e['request'] and e['start_us']/1e6>t0+0.2]
print(f"{sys.argv[3]} load {sys.argv[4]}: wall {ms(t1)} cpu {u+s:.2f} read-done {ms(full[0]) if full else None} last-query-end {ms(lastq)} tail {ms(t1)-ms(lastq)} exchanges {len(ex)} seq {chain} pack-puts {puts} max-q-in-flight {m} {tl}", flush=True)
PY
done; done
