#!/usr/bin/env bash
# Overhead of VitalsLayer against bare, its floor and its peers, in one run; prints ONE table.
#   1. builds benches/overhead.rs and examples/bench_server.rs in release;
#   2. runs every criterion group ROUNDS times (short: the machine is small and shared);
#      overhead = variant - bare of the same round; medians over rounds, [min-max] spread;
#   3. end to end: examples/bench_server.rs on 127.0.0.1 loaded by wrk at a fixed connection
#      count in short slices, every server in turn, interleaved round after round: in an axum
#      Router (bare, vitals = VitalsLayer + metrics-exporter-prometheus, vitals_recorder =
#      VitalsLayer + the crate's own recorder, axum_prometheus, floor / floor_recorder = the
#      floor with either recorder) and around a plain service_fn (plain_bare, plain_vitals,
#      plain_vitals_recorder, plain_floor, plain_floor_recorder), on /small (1 frame) and /stream
#      (1000 frames); and the demo's app (app_bare, app_vitals, app_vitals_recorder: JSON routes,
#      path parameters, a 500 and a streamed 1 MiB download, in the mix of
#      scripts/bench-app.lua). Server CPU per request from the server's CPU time over each slice
#      (/proc/<pid>/task/*/schedstat), and requests/s; the two recorders side by side (the
#      crate's over metrics-exporter-prometheus's, CPU over bare and rps) next to the floor.
# Not part of scripts/test.sh (that one only builds the bench). Bounded: about 10 minutes.
# Knobs (environment): ROUNDS=3 (criterion) E2E_ROUNDS=6 WRK_SECS=2 CONNS=32 WARM=0.5
#   MEASURE=1.5 SAMPLES=20
#   SKIP_CRITERION=1 / SKIP_E2E=1 to run one half; OUT=dir keeps the raw results there.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
export CARGO_TERM_COLOR=never
ROUNDS=${ROUNDS:-3}
E2E_ROUNDS=${E2E_ROUNDS:-6}
WRK_SECS=${WRK_SECS:-2}
CONNS=${CONNS:-32}
WARM=${WARM:-0.5}
MEASURE=${MEASURE:-1.5}
SAMPLES=${SAMPLES:-20}
t0=$SECONDS
say() { echo "== $* ($((SECONDS - t0))s)" >&2; }

if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; out=$(cd "$OUT" && pwd); else
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi

if [ -z "${SKIP_E2E:-}" ] && ! command -v wrk >/dev/null 2>&1; then
  say "installing wrk (Debian)"
  [ "$(id -u)" = 0 ] || { echo "bench.sh: wrk is missing and installing it needs root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
fi

say "build (release): benches/overhead.rs, examples/bench_server.rs"
artifacts() {
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["target"]["name"], m["executable"])'
}
bench_bin=$(cargo bench --bench overhead --no-run --message-format=json 2>/dev/null | artifacts | awk '$1=="overhead"{print $2}' | tail -1)
cargo build --release --example bench_server >/dev/null 2>&1 \
  || { cargo build --release --example bench_server; exit 1; }
server_bin=$(cargo build --release --example bench_server --message-format=json 2>/dev/null | artifacts | awk '$1=="bench_server"{print $2}' | tail -1)
[ -x "$bench_bin" ] && [ -x "$server_bin" ] || { echo "bench.sh: build failed" >&2; exit 1; }

if [ -z "${SKIP_CRITERION:-}" ]; then
  for r in $(seq 1 "$ROUNDS"); do
    say "criterion round $r/$ROUNDS (warm-up ${WARM}s, measurement ${MEASURE}s, $SAMPLES samples)"
    CRITERION_HOME="$out/criterion-$r" timeout 400 "$bench_bin" --bench \
      --warm-up-time "$WARM" --measurement-time "$MEASURE" --sample-size "$SAMPLES" \
      > "$out/criterion-$r.log" 2>&1 || { tail -20 "$out/criterion-$r.log" >&2; exit 1; }
  done
fi

# End to end: one server per variant, all started once (an idle server costs nothing), then
# short wrk slices interleaved A B C D A B C D ... so that the machine's load drifts over all
# variants alike. With 2+ cores the servers share CPU 0 and wrk runs on CPU 1.
pids=()
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_servers; [ -n "${OUT:-}" ] || rm -rf "$out"' EXIT
# CPU time of a server in ns: the sum over its threads of the time on a CPU from schedstat
# (exact, where /proc/<pid>/stat counts 10 ms ticks: a loaded machine leaves a server only ~20
# ticks per slice); falls back to stat's utime + stime ticks.
cpu_ns() {
  if [ -r "/proc/$1/schedstat" ]; then
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
  else
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.0f\n", ($14 + $15) * 1e9 / hz}' "/proc/$1/stat"
  fi
}
pin_server=(); pin_wrk=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  pin_server=(taskset -c 0); pin_wrk=(taskset -c 1)
fi

if [ -z "${SKIP_E2E:-}" ]; then
  : > "$out/e2e.tsv"
  declare -A pid_of addr_of
  servers=(bare vitals vitals_recorder axum_prometheus floor floor_recorder
    plain_bare plain_vitals plain_vitals_recorder plain_floor plain_floor_recorder
    app_bare app_vitals app_vitals_recorder)
  # Each slice: server, route ("app" = the demo app's request mix).
  slices=()
  for route in small stream; do
    for v in bare vitals vitals_recorder axum_prometheus floor floor_recorder \
      plain_bare plain_vitals plain_vitals_recorder plain_floor plain_floor_recorder; do
      slices+=("$v $route")
    done
  done
  for v in app_bare app_vitals app_vitals_recorder; do slices+=("$v app"); done
  max_secs=$(( E2E_ROUNDS * ${#slices[@]} * (WRK_SECS + 2) + 120 ))
  app_lua=$(pwd)/scripts/bench-app.lua
  load() {  # load <addr> <route> <secs>
    if [ "$2" = app ]; then
      "${pin_wrk[@]}" wrk -t1 -c"$CONNS" -d"$3" -s "$app_lua" "http://$1"
    else
      "${pin_wrk[@]}" wrk -t1 -c"$CONNS" -d"$3" "http://$1/$2"
    fi
  }
  for v in "${servers[@]}"; do
    "${pin_server[@]}" "$server_bin" "$v" "$max_secs" > "$out/server-$v.out" 2>&1 &
    pid_of[$v]=$!; pids+=("$!")
  done
  for v in "${servers[@]}"; do
    addr=
    for _ in $(seq 1 50); do
      addr=$(awk '/^listening on/{print $3}' "$out/server-$v.out")
      [ -n "$addr" ] && break; sleep 0.1
    done
    [ -n "$addr" ] || { echo "bench.sh: bench_server $v did not start" >&2; cat "$out/server-$v.out" >&2; exit 1; }
    addr_of[$v]=$addr
    routes=(small stream); [[ $v == app_* ]] && routes=(app)
    for route in "${routes[@]}"; do  # warm-up: connections, handle caches, allocator
      load "$addr" "$route" 1s > /dev/null 2>&1
    done
  done
  for r in $(seq 1 "$E2E_ROUNDS"); do
    say "end to end round $r/$E2E_ROUNDS (${#slices[@]} slices of ${WRK_SECS}s; load average $(cut -d' ' -f1 /proc/loadavg))"
    for slice in "${slices[@]}"; do
      read -r v route <<< "$slice"
      {
        pid=${pid_of[$v]}
        before=$(cpu_ns "$pid")
        load "${addr_of[$v]}" "$route" "${WRK_SECS}s" > "$out/wrk.out" 2>&1
        after=$(cpu_ns "$pid")
        reqs=$(awk '/requests in/{print $1}' "$out/wrk.out")
        rps=$(awk '/^Requests\/sec/{print $2}' "$out/wrk.out")
        # The app's mix has a route that answers 500 on purpose: only socket errors count there.
        if [ "$route" = app ]; then pattern='Socket errors'; else pattern='Non-2xx|Socket errors'; fi
        errs=$(awk "/$pattern/{print}" "$out/wrk.out" | tr '\n' ' ')
        [ -z "$errs" ] || echo "bench.sh: $v $route: $errs" >&2
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$v" "$route" "$((after - before))" "$reqs" "$rps" >> "$out/e2e.tsv"
      }
    done
  done
  stop_servers
fi

say "table"
python3 - "$out" "$ROUNDS" "$(getconf CLK_TCK)" "$CONNS" "$WRK_SECS" "$E2E_ROUNDS" <<'EOF'
import json, os, statistics, sys
out, rounds, clk, conns, wrk_secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
e2e_rounds = int(sys.argv[6])
FRAMES = 1000

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def cell(xs, fmt="{:+.0f}"):
    if not xs:
        return "-"
    return f"{fmt.format(med(xs))} [{fmt.format(min(xs))}..{fmt.format(max(xs))}]"

rows, targets, side = [], [], []
MEPS = "metrics-exporter-prometheus's"

# ---------------------------------------------------------------- criterion
variants = ["trace", "axum_prometheus", "vitals_noop", "floor_noop", "vitals_prometheus",
            "floor_prometheus", "vitals_recorder", "floor_recorder", "vitals_dogstatsd",
            "floor_dogstatsd", "vitals_statsd"]
def estimate(r, group, variant):
    p = os.path.join(out, f"criterion-{r}", group, variant, "new", "estimates.json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["median"]["point_estimate"]

crit = {}  # (kind, variant) -> {"req": [...], "frame": [...]} paired per round
have_criterion = os.path.isdir(os.path.join(out, "criterion-1"))
for kind in ("plain", "axum") if have_criterion else ():
    for v in variants + ["bare"]:
        req, frame = [], []
        for r in range(1, rounds + 1):
            b1, bn = estimate(r, f"{kind}_1x12B", "bare"), estimate(r, f"{kind}_1000x128B", "bare")
            v1, vn = estimate(r, f"{kind}_1x12B", v), estimate(r, f"{kind}_1000x128B", v)
            if None in (b1, bn, v1, vn):
                continue
            req.append(v1 - b1)
            frame.append(((vn - bn) - (v1 - b1)) / (FRAMES - 1))
        crit[(kind, v)] = {"req": req, "frame": frame,
                           "abs": [estimate(r, f"{kind}_1x12B", v) for r in range(1, rounds + 1)]}

def pooled(xs, ys):
    """sum(xs) / sum(ys): the ratio of the mean overheads over rounds (a median of per-round
    ratios is ill-conditioned when the denominator is small next to the noise)."""
    s = sum(ys)
    return sum(xs) / s if s > 0 else float("inf")

def interval(xs, ys, n=2000):
    """95 % bootstrap interval of pooled(xs, ys), resampling rounds (paired)."""
    import random
    rng, k, out = random.Random(13), len(xs), []
    for _ in range(n if k else 0):
        idx = [rng.randrange(k) for _ in range(k)]
        out.append(pooled([xs[i] for i in idx], [ys[i] for i in idx]))
    out.sort()
    return (out[int(0.025 * n)], out[int(0.975 * n) - 1]) if out else (float("nan"), float("nan"))

def verdict(xs, ys, limit):
    """True (met), False (missed), or None (not resolved: the 95 % interval straddles limit, or
    the denominator's own mean is not clearly above 0)."""
    if not floor_resolved(ys):
        return None
    lo, hi = interval(xs, ys)
    return True if hi <= limit else False if lo > limit else None

def mean_interval(ys, n=2000):
    """95 % bootstrap interval of the mean of ys (rounds resampled)."""
    import random
    rng, k, out = random.Random(5), len(ys), []
    for _ in range(n if k else 0):
        out.append(sum(ys[rng.randrange(k)] for _ in range(k)) / k)
    out.sort()
    return (out[int(0.025 * n)], out[int(0.975 * n) - 1]) if out else (float("nan"), float("nan"))

def floor_resolved(ys):
    return mean_interval(ys)[0] > 0

def ratio_detail(xs, ys, whose="the floor's"):
    """The pooled ratio and its interval, or why there is none."""
    if not floor_resolved(ys):
        lo, hi = mean_interval(ys)
        return (f"no ratio: {whose} mean overhead {sum(ys) / len(ys):+.0f} ns is not clearly above 0 "
                f"(95% interval {lo:+.0f}..{hi:+.0f} ns)")
    lo, hi = interval(xs, ys)
    return f"{pooled(xs, ys):.2f}x, 95% interval {lo:.2f}..{hi:.2f}"

def ratio(a, b, key):
    xs = [x / y for x, y in zip(crit[a][key], crit[b][key]) if y > 0]
    return xs

for kind in ("plain", "axum") if have_criterion else ():
    bare_abs = [x for x in crit[(kind, "bare")]["abs"] if x is not None]
    rows.append((f"criterion {kind}", "bare", f"{med(bare_abs):.0f} ns/request (absolute)", "-", "-", "-"))
    for v in variants:
        c = crit[(kind, v)]
        floor = None
        if v.startswith("vitals_") and (kind, v.replace("vitals_", "floor_")) in crit:
            floor = v.replace("vitals_", "floor_")
        to_floor = "-"
        if floor:
            rq = ratio((kind, v), (kind, floor), "req")
            fr = ratio((kind, v), (kind, floor), "frame")
            to_floor = f"req {cell(rq, '{:.2f}')}; frame {cell(fr, '{:.2f}')}"
        rows.append((f"criterion {kind}", v, cell(c["req"]), cell(c["frame"], "{:+.1f}"), "-", to_floor))

    # Targets from issue 5.
    vp, fp, ap = crit[(kind, "vitals_prometheus")], crit[(kind, "floor_prometheus")], crit[(kind, "axum_prometheus")]
    r = med(ratio((kind, "vitals_prometheus"), (kind, "floor_prometheus"), "req"))
    targets.append((f"{kind}: per request, VitalsLayer+Prometheus <= 1.3x floor+Prometheus", r <= 1.3,
                    f"{med(vp['req']):+.0f} ns vs {med(fp['req']):+.0f} ns over bare = {r:.2f}x"))
    targets.append((f"{kind}: per request, VitalsLayer+Prometheus <= 1.15x floor+Prometheus (issue 13)",
                    verdict(vp["req"], fp["req"], 1.15), ratio_detail(vp["req"], fp["req"])))
    r = med(ap["req"]) / med(vp["req"]) if med(vp["req"]) > 0 else float("inf")
    targets.append((f"{kind}: axum-prometheus overhead >= 5x VitalsLayer+Prometheus's", r >= 5,
                    f"{med(ap['req']):+.0f} ns vs {med(vp['req']):+.0f} ns = {r:.1f}x"))
    if kind == "axum":
        r = med(ap["req"]) / med(vp["req"]) if med(vp["req"]) > 0 else float("inf")
        targets.append(("axum: VitalsLayer+Prometheus >= 3.5x below axum-prometheus in a Router (issue 13)",
                        r >= 3.5, f"{med(ap['req']):+.0f} ns vs {med(vp['req']):+.0f} ns = {r:.1f}x"))
    r = med(ratio((kind, "vitals_prometheus"), (kind, "floor_prometheus"), "frame"))
    targets.append((f"{kind}: per frame, VitalsLayer+Prometheus <= 1.3x floor", r <= 1.3,
                    f"{med(vp['frame']):+.1f} ns vs {med(fp['frame']):+.1f} ns = {r:.2f}x"))
    peers = {p: med(crit[(kind, p)]["frame"]) for p in ("trace", "axum_prometheus")}
    below = all(med(vp["frame"]) < x for x in peers.values())
    targets.append((f"{kind}: per frame below every peer", below,
                    f"{med(vp['frame']):+.1f} ns vs " + ", ".join(f"{p} {x:+.1f} ns" for p, x in peers.items())))
    vr = crit[(kind, "vitals_recorder")]
    if vr["req"]:
        targets.append((f"{kind}: per request over bare, VitalsLayer + the crate's recorder vs "
                        f"VitalsLayer + metrics-exporter-prometheus (reported; callgrind has the "
                        f"0.7x target)", True,
                        f"{med(vr['req']):+.0f} ns vs {med(vp['req']):+.0f} ns: {ratio_detail(vr['req'], vp['req'])}"))
    r = med(ratio((kind, "vitals_dogstatsd"), (kind, "floor_dogstatsd"), "req"))
    targets.append((f"{kind}: per request, VitalsLayer+dogstatsd <= 1.3x floor+dogstatsd", r <= 1.3,
                    f"{med(crit[(kind, 'vitals_dogstatsd')]['req']):+.0f} ns vs "
                    f"{med(crit[(kind, 'floor_dogstatsd')]['req']):+.0f} ns = {r:.2f}x"))

# ---------------------------------------------------------------- end to end
e2e = {}
path = os.path.join(out, "e2e.tsv")
if os.path.exists(path):
    for line in open(path):
        r, v, route, cpu_ns, reqs, rps = line.split("\t")
        reqs = int(reqs)
        e2e[(int(r), v, route)] = (int(cpu_ns) / max(reqs, 1), float(rps))
    rounds_e2e = range(1, e2e_rounds + 1)
    def per_round(v, bare, route, f):
        return [f(e2e[(r, v, route)], e2e[(r, bare, route)]) for r in rounds_e2e
                if (r, v, route) in e2e and (r, bare, route) in e2e]
    over = lambda a, b: a[0] - b[0]
    for context, prefix in (("axum Router", ""), ("plain service", "plain_")):
        bare = prefix + "bare"
        if not any(k[1] == bare for k in e2e):
            continue
        label = f"end to end, {context} (server CPU)"
        cpu = [e2e[(r, bare, "small")][0] for r in rounds_e2e if (r, bare, "small") in e2e]
        rps = [e2e[(r, bare, "small")][1] for r in rounds_e2e if (r, bare, "small") in e2e]
        rows.append((label, bare, f"{med(cpu):.0f} ns CPU/request (absolute)", "-",
                     f"{med(rps):.0f} rps /small (absolute)", "-"))
        for layer in ("vitals", "vitals_recorder", "axum_prometheus", "floor", "floor_recorder"):
            v = prefix + layer
            if not any(k[1] == v for k in e2e):
                continue
            req = per_round(v, bare, "small", over)
            stream = per_round(v, bare, "stream", over)
            frame = [(f - q) / (FRAMES - 1) for q, f in zip(req, stream)]
            rps_s = per_round(v, bare, "small", lambda a, b: a[1] / b[1])
            rps_f = per_round(v, bare, "stream", lambda a, b: a[1] / b[1])
            pct = per_round(v, bare, "small", lambda a, b: 100 * (a[0] - b[0]) / b[0])
            to_floor = "-"
            floor_of = {"vitals": "floor", "vitals_recorder": "floor_recorder"}.get(layer)
            if floor_of and any(k[1] == prefix + floor_of for k in e2e):
                fl = per_round(prefix + floor_of, bare, "small", over)
                fl_rps = per_round(prefix + floor_of, bare, "small", lambda a, b: a[1] / b[1])
                points = [100 * (a - b) for a, b in zip(rps_s, fl_rps)]
                to_floor = f"CPU {ratio_detail(req, fl)}; rps {cell(points, '{:+.1f}')} points"
                which = "" if layer == "vitals" else " (the crate's recorder)"
                targets.append((f"end to end, {context}{which}: server CPU over bare <= 1.3x the floor's",
                                verdict(req, fl, 1.3),
                                f"mean over rounds {sum(req) / len(req):+.0f} ns vs {sum(fl) / len(fl):+.0f} ns: "
                                f"{ratio_detail(req, fl)}"))
                targets.append((f"end to end, {context}{which}: rps / bare within 3 points of the floor's",
                                abs(med(points)) <= 3 or med(points) > 0,
                                f"{med(rps_s):.3f} vs {med(fl_rps):.3f} ({med(points):+.1f} points)"))
            rows.append((label, v, f"{cell(req)} ({med(pct):.1f}% of bare)", cell(frame, "{:+.1f}"),
                         f"small {cell(rps_s, '{:.3f}')}; stream {cell(rps_f, '{:.3f}')}", to_floor))
        # The two recorders side by side, same layer, same round: the crate's over
        # metrics-exporter-prometheus's (server CPU over bare; requests/s), the floors' likewise.
        for a, b, what in (("vitals_recorder", "vitals", "VitalsLayer"),
                           ("floor_recorder", "floor", "floor")):
            a, b = prefix + a, prefix + b
            if not (any(k[1] == a for k in e2e) and any(k[1] == b for k in e2e)):
                continue
            parts = []
            for route in ("small", "stream"):
                xa, xb = per_round(a, bare, route, over), per_round(b, bare, route, over)
                rr = [e2e[(r, a, route)][1] / e2e[(r, b, route)][1] for r in rounds_e2e
                      if (r, a, route) in e2e and (r, b, route) in e2e]
                parts.append(f"/{route}: CPU over bare {sum(xa) / len(xa):+.0f} vs {sum(xb) / len(xb):+.0f} ns "
                             f"= {ratio_detail(xa, xb, MEPS)}; rps {cell(rr, '{:.3f}')}x")
            side.append((f"{context}, {what}: the crate's recorder / metrics-exporter-prometheus", "; ".join(parts)))
    if any(k[1] == "app_bare" for k in e2e):
        label = "end to end, demo app (server CPU)"
        cpu = [e2e[(r, "app_bare", "app")][0] for r in rounds_e2e if (r, "app_bare", "app") in e2e]
        rps = [e2e[(r, "app_bare", "app")][1] for r in rounds_e2e if (r, "app_bare", "app") in e2e]
        rows.append((label, "app_bare", f"{med(cpu):.0f} ns CPU/request (absolute)", "-",
                     f"{med(rps):.0f} rps (absolute)", "-"))
        req = per_round("app_vitals", "app_bare", "app", over)
        pct = per_round("app_vitals", "app_bare", "app", lambda a, b: 100 * (a[0] - b[0]) / b[0])
        rps_a = per_round("app_vitals", "app_bare", "app", lambda a, b: a[1] / b[1])
        rows.append((label, "app_vitals", f"{cell(req)} ({med(pct):.1f}% of bare)", "-",
                     f"mix {cell(rps_a, '{:.3f}')}", "-"))
        if any(k[1] == "app_vitals_recorder" for k in e2e):
            req_r = per_round("app_vitals_recorder", "app_bare", "app", over)
            pct_r = per_round("app_vitals_recorder", "app_bare", "app", lambda a, b: 100 * (a[0] - b[0]) / b[0])
            rps_r = per_round("app_vitals_recorder", "app_bare", "app", lambda a, b: a[1] / b[1])
            rows.append((label, "app_vitals_recorder", f"{cell(req_r)} ({med(pct_r):.1f}% of bare)", "-",
                         f"mix {cell(rps_r, '{:.3f}')}", "-"))
            rr = [e2e[(r, "app_vitals_recorder", "app")][1] / e2e[(r, "app_vitals", "app")][1]
                  for r in rounds_e2e if (r, "app_vitals_recorder", "app") in e2e and (r, "app_vitals", "app") in e2e]
            side.append(("demo app, VitalsLayer: the crate's recorder / metrics-exporter-prometheus",
                         f"CPU over bare {sum(req_r) / len(req_r):+.0f} vs {sum(req) / len(req):+.0f} ns "
                         f"= {ratio_detail(req_r, req, MEPS)}; rps {cell(rr, '{:.3f}')}x"))
        hello = per_round("vitals", "bare", "small", lambda a, b: 100 * (a[0] - b[0]) / b[0])
        targets.append(("the layer's server CPU as % of bare, demo app vs hello world (reported)", True,
                        f"app {med(pct):.1f}% [{min(pct):.1f}..{max(pct):.1f}]; hello world (axum /small) "
                        f"{med(hello):.1f}% [{min(hello):.1f}..{max(hello):.1f}]"))

head = ("measurement", "variant", "ns/request over bare", "ns/frame over bare", "rps / bare", "ratio to floor (same recorder)")
print(f"\nmedians, [min..max] of the per-round values; overhead = variant - bare of the same round")
print(f"criterion: {rounds} rounds; end to end: {e2e_rounds} rounds of wrk -t1 -c{conns} -d{wrk_secs}s per server and route, interleaved; CPU from /proc/<pid>/task/*/schedstat\n")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for row in rows:
    print("| " + " | ".join(row) + " |")
if side:
    print("\nside by side, same run (issue 22): the layer with the crate's recorder against the layer with")
    print("metrics-exporter-prometheus; ratio of the mean server CPU over bare over rounds (95% bootstrap")
    print("interval), rps = the crate's / metrics-exporter-prometheus's requests/s, per round:")
    for name, detail in side:
        print(f"- {name}: {detail}")
if targets:
    print("\ntargets (issues 5 and 13):")
    print("(UNRESOLVED: the 95% interval over rounds straddles the limit, or the floor's own overhead is")
    print(" not clearly above 0: this run's noise is larger than the difference; see")
    print(" scripts/bench-server-callgrind.sh for counts that do not depend on load)")
    for name, ok, detail in targets:
        word = "MET   " if ok is True else "MISSED" if ok is False else "UNRESOLVED"
        print(f"- {word} {name}: {detail}")
EOF
say "done"
