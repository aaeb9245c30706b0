#!/usr/bin/env python3
"""Timelines of a networked persist or attach (docs/benchmarks.md, "Where
the 50 ms persist and attach wait"): the exchanges the latency proxy
forwarded (its STRATA_PROXY_LOG, proxy/src/timeline.rs) and the client's
own progress lines, on one clock.

  timeline.py run OUT -- strata ... --progress json ...
      runs the command, writes OUT: its start and end and each stderr line
      with the wall-clock time it was read.
  timeline.py show OUT PROXY_LOG
      prints, in milliseconds from the command's start, the client's
      stages and every exchange that began while it ran: connection,
      request line, bytes up and down, when it started, when the request
      was sent whole, when the answer began and ended; then the gaps in
      which no request was in flight and the critical path's exchanges.
"""

import json
import subprocess
import sys
import time


def run(out, cmd):
    start = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append((time.time(), line.rstrip("\n")))
    code = proc.wait()
    end = time.time()
    with open(out, "w") as f:
        json.dump({"cmd": cmd, "start": start, "end": end, "code": code, "stderr": lines}, f)
    sys.exit(code)


def stages(rec, t0):
    """The client's progress lines as (ms, text)."""
    out = []
    for t, line in rec["stderr"]:
        try:
            p = json.loads(line)["progress"]
            text = f"{p['command']}: {p['done_bytes'] / 1e6:.1f} of {p['total_bytes'] / 1e6:.1f} MB"
        except (ValueError, KeyError, TypeError):
            text = line[:100]
        out.append(((t - t0) * 1e3, text))
    return out


def show(recf, logf):
    rec = json.load(open(recf))
    t0, t1 = rec["start"], rec["end"]
    ex = []
    for line in open(logf):
        e = json.loads(line)
        s = e["start_us"] / 1e6
        if t0 <= s <= t1:
            ex.append(e)
    ex.sort(key=lambda e: e["start_us"])
    ms = lambda us: "-" if us is None else f"{(us / 1e6 - t0) * 1e3:7.0f}"
    print(f"command: {' '.join(rec['cmd'][-6:])}")
    print(f"wall {(t1 - t0) * 1e3:.0f} ms, {len(ex)} exchanges on "
          f"{len({e['connection'] for e in ex})} connections")
    print("\nclient (stderr lines, ms from start):")
    for t, text in stages(rec, t0):
        print(f"  {t:7.0f}  {text}")
    print("\n| conn | start | sent | first answer | end | up B | down B | request |")
    print("|---|---|---|---|---|---|---|---|")
    for e in ex:
        print(f"| {e['connection']} | {ms(e['start_us'])} | {ms(e['sent_us'])} | "
              f"{ms(e['first_answer_us'])} | {ms(e['end_us'])} | {e['up_bytes']} | "
              f"{e['down_bytes']} | {e['request'][:70]} |")
    # Idle: intervals of the command in which no exchange was in flight.
    spans = sorted((e["start_us"] / 1e6, (e["end_us"] or e["start_us"]) / 1e6) for e in ex)
    idle, at = [], t0
    for s, e in spans:
        if s > at:
            idle.append((at, s))
        at = max(at, e)
    if t1 > at:
        idle.append((at, t1))
    print("\nnothing in flight (ms from start): " +
          ", ".join(f"{(a - t0) * 1e3:.0f}-{(b - t0) * 1e3:.0f}" for a, b in idle if b - a > 0.005))
    # The critical path as the proxy counts it: exchanges none of which overlap.
    chain, last = [], None
    for e in sorted(ex, key=lambda e: e["end_us"] or e["start_us"]):
        if last is None or e["start_us"] > last:
            chain.append(e)
            last = e["end_us"] or e["start_us"]
    print(f"sequential exchanges: {len(chain)}: " +
          "; ".join(f"{e['request'][:40]} ({ms(e['start_us']).strip()}-{ms(e['end_us']).strip()})"
                    for e in chain))


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "run" and sys.argv[3] == "--":
        run(sys.argv[2], sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "show":
        show(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
