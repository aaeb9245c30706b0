#!/bin/bash
# Peak RSS (`/usr/bin/time -f %M`) of the chain of docs/benchmarks.md,
# "Where the memory goes": one store, jobs a, b:a, c:b, d:c, e:d; a and c
# persist the base tree, b and d the next one, e attaches all four layers
# (fresh), then again with `--only node_modules` (which merges whole
# manifests: the same binary's before-and-after of the streamed merge).
#
#   bench/memory_chain.sh STRATA CORPUS WORK
#
# CORPUS holds base/node_modules and next/node_modules (e.g. the bench's
# ~/.cache/strata-bench/synthetic-100000-max4096). WORK is created and
# removed (at 10^5 files it needs ~1.5 GB).
set -euo pipefail
strata=$1
corpus=$2
work=$3
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
store=$work/store
"$strata" --store "$store" run create --run r --job a --job b:a --job c:b --job d:c --job e:d >/dev/null
for j in a:base b:next c:base d:next; do
  job=${j%%:*}
  tree=${j##*:}
  /usr/bin/time -f "persist $job ($tree): %M KiB peak RSS, %e s, %U+%S s CPU" \
    "$strata" --store "$store" persist --run r --job "$job" --root "$corpus/$tree" node_modules 2>&1 >/dev/null | grep -v '^strata'
done
uptime
/usr/bin/time -f "attach e (4 layers, streamed): %M KiB peak RSS, %e s, %U+%S s CPU" \
  "$strata" --store "$store" attach --run r --job e --at "$work/e" 2>&1 >/dev/null | grep -v '^strata'
uptime
/usr/bin/time -f "attach e --only node_modules (4 layers, whole manifests): %M KiB peak RSS, %e s, %U+%S s CPU" \
  "$strata" --store "$store" attach --run r --job e --at "$work/e-only" --only node_modules 2>&1 >/dev/null | grep -v '^strata'
uptime
