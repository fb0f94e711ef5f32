#!/usr/bin/env bash
# Per-request profile of the REAL server (examples/bench_server.rs, release) under loopback load:
# each variant runs under `valgrind --tool=callgrind --cache-sim=yes --collect-bus=yes`, is warmed
# up by wrk, its counters are zeroed (callgrind_control -z), wrk sends a bounded load (WRK_SECS,
# CONNS connections, one route), the counters are dumped, and everything the server process did
# in between is divided by the requests wrk completed: instructions (Ir), L1 instruction misses
# (I1mr), L1 data misses (D1mr + D1mw), and locked (atomic read-modify-write) instructions (Ge,
# callgrind's "global bus events"). Counts do not depend on the machine's load; kernel work
# (syscalls) is not counted; the Prometheus upkeep is held off (BENCH_UPKEEP_SECS) so that it
# does not fall into the counted window. TOP=N also lists the N functions whose cost differs most between
# each `vitals` variant and the floor of the same context.
#   scripts/bench-server-callgrind.sh [variant ...]   (default: plain_bare plain_floor plain_vitals
#                                                        bare floor vitals)
# With `vitals_recorder` / `floor_recorder` (the crate's own recorder) beside `vitals` / `floor`
# (metrics-exporter-prometheus) and `bare` of the same context, it also prints the pair's ratio.
# Knobs: WRK_SECS=4 CONNS=8 ROUTE=small TOP=0 OUT=dir (keep the raw callgrind files) REPEAT=2
# (runs per variant; the run with the fewest instructions per request is kept: the allocator
# sometimes consolidates its free lists inside the counted window, +400 instructions and +10
# atomics per request that belong to no request; the minimum leaves such runs out).
# Needs valgrind and wrk (Debian). Bounded: about 15 s per variant.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
WRK_SECS=${WRK_SECS:-4}
CONNS=${CONNS:-8}
ROUTE=${ROUTE:-small}
for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "bench-server-callgrind: $tool is missing (apt-get install valgrind wrk)" >&2; exit 1; }
done
cargo build --release --example bench_server >/dev/null 2>&1 \
  || { cargo build --release --example bench_server; exit 1; }
bin=$CARGO_TARGET_DIR/release/examples/bench_server
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; out=$(cd "$OUT" && pwd); else
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(plain_bare plain_floor plain_vitals bare floor vitals)
vpid=
stop() { [ -z "$vpid" ] || { kill "$vpid" 2>/dev/null || true; wait "$vpid" 2>/dev/null || true; vpid=; }; }
trap 'stop; [ -n "${OUT:-}" ] || rm -rf "$out"' EXIT
REPEAT=${REPEAT:-2}
# Instructions per request of a run's files ($1: their prefix).
per_request() {
  awk -v n="$(cat "$1.requests")" '/PROGRAM TOTALS/{gsub(",", "", $1); printf "%d\n", $1 / (n > 0 ? n : 1); exit}' "$1.txt"
}
for v in "${variants[@]}"; do
 best=
 for try in $(seq 1 "$REPEAT"); do
  rm -f "$out/$v".cg* "$out/$v".out
  BENCH_UPKEEP_SECS=3600 valgrind --tool=callgrind --cache-sim=yes --collect-bus=yes --compress-strings=no --compress-pos=no --callgrind-out-file="$out/$v.cg" \
    "$bin" "$v" $((WRK_SECS * 3 + 60)) > "$out/$v.out" 2> "$out/$v.err" &
  vpid=$!
  addr=
  for _ in $(seq 1 150); do
    addr=$(awk '/^listening on/{print $3}' "$out/$v.out" 2>/dev/null || true)
    [ -n "$addr" ] && break; sleep 0.1
  done
  [ -n "$addr" ] || { echo "bench-server-callgrind: $v did not start" >&2; cat "$out/$v.err" >&2; exit 1; }
  wrk -t1 -c"$CONNS" -d2s "http://$addr/$ROUTE" > /dev/null  # warm-up: caches, connections
  callgrind_control -z "$vpid" > /dev/null
  wrk -t1 -c"$CONNS" -d"${WRK_SECS}s" "http://$addr/$ROUTE" > "$out/$v.wrk"
  callgrind_control -d "$vpid" > /dev/null
  stop
  awk '/requests in/{print $1}' "$out/$v.wrk" > "$out/$v.requests"
  callgrind_annotate --inclusive=no --threshold=100 --show=Ir,I1mr,D1mr,D1mw,Ge --sort=Ir "$out/$v.cg.1" 2>/dev/null \
    | grep -E '^ *[0-9,]+ ' > "$out/$v.txt" || true
  ir=$(per_request "$out/$v")
  if [ -z "$best" ] || [ "$ir" -lt "$best" ]; then
    best=$ir
    for f in txt requests wrk; do cp "$out/$v.$f" "$out/$v.best.$f"; done
  fi
 done
 for f in txt requests wrk; do mv "$out/$v.best.$f" "$out/$v.$f"; done
done
python3 - "$out" "${TOP:-0}" "${variants[@]}" <<'PY'
import re, sys
out, top, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
FIELD = re.compile(r" *([0-9,]+|\.)(?: +\( *[0-9.]+%\))?")
def load(v):
    n = int(open(f"{out}/{v}.requests").read())
    funcs, total = {}, None
    for line in open(f"{out}/{v}.txt"):
        nums, pos = [], 0
        for _ in range(5):
            m = FIELD.match(line, pos)
            if not m: break
            nums.append(0 if m.group(1) == "." else int(m.group(1).replace(",", "")))
            pos = m.end()
        if len(nums) < 5: continue
        name = re.sub(r" \[.*", "", line[pos:].strip())
        if name == "PROGRAM TOTALS": total = nums
        elif nums == total: continue  # frames on the stack when counting started (main, block_on...)
        cur = funcs.get(name, [0] * 5)
        funcs[name] = [a + b / n for a, b in zip(cur, nums)]
    funcs["PROGRAM TOTALS"] = [x / n for x in total]
    return n, funcs
data = {v: load(v) for v in variants}
print(f"per request (callgrind; events inside the server process between zero and dump / requests)")
print(f"| variant | requests | Ir | I1 misses | D1 misses | atomic RMW (locked) |")
print(f"|---|---|---|---|---|---|")
for v in variants:
    n, f = data[v]
    t = f.get("PROGRAM TOTALS", [0] * 5)
    print(f"| {v} | {n} | {t[0]:.0f} | {t[1]:.0f} | {t[2] + t[3]:.1f} | {t[4]:.2f} |")
for prefix in ("plain_", ""):
    bare, floor, vitals = prefix + "bare", prefix + "floor", prefix + "vitals"
    if not all(x in data for x in (bare, floor, vitals)): continue
    t = {x: data[x][1]["PROGRAM TOTALS"] for x in (bare, floor, vitals)}
    over = lambda x, i: t[x][i] - t[bare][i]
    ir = over(vitals, 0) / over(floor, 0)
    i1 = over(vitals, 1) / over(floor, 1) if over(floor, 1) > 0 else float("nan")
    print(f"{'plain service' if prefix else 'axum Router'}: VitalsLayer {over(vitals, 0):+.0f} Ir over bare, "
          f"the floor {over(floor, 0):+.0f}: {ir:.2f}x ({'within' if ir <= 1.3 else 'ABOVE'} issue 13's 1.3x); "
          f"I1 misses {over(vitals, 1):+.0f} vs {over(floor, 1):+.0f} ({i1:.2f}x); "
          f"atomics {over(vitals, 4):+.1f} vs {over(floor, 4):+.1f}")
# The two recorders side by side (issue 22): the crate's (`*_recorder`) over
# metrics-exporter-prometheus's, same layer, whole request and over bare.
for prefix in ("plain_", ""):
    bare = prefix + "bare"
    for layer in ("vitals", "floor"):
        mine, theirs = prefix + layer + "_recorder", prefix + layer
        if not all(x in data for x in (bare, mine, theirs)): continue
        t = {x: data[x][1]["PROGRAM TOTALS"] for x in (bare, mine, theirs)}
        over = lambda x, i: t[x][i] - t[bare][i]
        print(f"{'plain service' if prefix else 'axum Router'}, {layer}: the crate's recorder / "
              f"metrics-exporter-prometheus: {t[mine][0]:.0f} / {t[theirs][0]:.0f} Ir = {t[mine][0] / t[theirs][0]:.3f}x "
              f"(over bare {over(mine, 0):+.0f} / {over(theirs, 0):+.0f} = {over(mine, 0) / over(theirs, 0):.3f}x); "
              f"atomics {over(mine, 4):+.1f} vs {over(theirs, 4):+.1f}")
for v in variants if top else ():
    if not v.endswith("vitals"): continue
    base = v[: -len("vitals")] + "floor"
    if base not in data: continue
    a, b = data[v][1], data[base][1]
    diff = {k: [x - y for x, y in zip(a.get(k, [0] * 5), b.get(k, [0] * 5))] for k in set(a) | set(b)}
    diff.pop("PROGRAM TOTALS", None)
    print(f"\n{v} - {base}: functions that differ most (per request: Ir, I1mr, D1mr+D1mw, Ge)")
    for k in sorted(diff, key=lambda k: -(abs(diff[k][0]) + 20 * abs(diff[k][1]) + 50 * abs(diff[k][4])))[:top]:
        d = diff[k]
        print(f"  {d[0]:>+8.0f} {d[1]:>+7.1f} {d[2] + d[3]:>+6.1f} {d[4]:>+6.2f}  {k[:150]}")
PY
