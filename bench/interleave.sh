#!/bin/bash
# Times commands against each other, interleaved, with `sync` and a second's
# pause before each run: on a 2-core machine with writeback in flight, this
# is what shows a difference of a few percent (docs/benchmarks.md).
#
#   bench/interleave.sh RUNS WORK 'NAME=COMMAND' ...
#
# Each COMMAND runs RUNS times under `sh -c`, with `{at}` replaced by a new
# directory under WORK (created empty) and `{n}` by the round. Prints each
# run (name, wall, user and system seconds) and then each name's median
# wall time. Leaves WORK in place: deleting many files just before a timed
# step slows file creation for minutes, so clean up afterwards.
set -euo pipefail
runs=$1
work=$2
shift 2
mkdir -p "$work"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for n in $(seq 1 "$runs"); do
	for spec in "$@"; do
		name=${spec%%=*}
		at="$work/$name-$n-$$"
		mkdir -p "$at"
		cmd=${spec#*=}
		cmd=${cmd//\{at\}/$at}
		cmd=${cmd//\{n\}/$n}
		sync
		sleep 1
		/usr/bin/time -f "$name %e %U %S" -o "$results.one" sh -c "$cmd" >/dev/null
		cat "$results.one" | tee -a "$results"
	done
done
rm -f "$results.one"
echo "median wall time:"
for spec in "$@"; do
	name=${spec%%=*}
	grep "^$name " "$results" | awk '{print $2}' | sort -n |
		awk -v name="$name" '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%s %.2f s (%d runs)\n", name, m, NR}'
done
