#!/usr/bin/env bash
# scripts/bench.sh - vlm against PyTorch on the bench models, in one command.
#
#   scripts/bench.sh      # everything: about 6 min on an idle 2-core machine, twice that when
#                         # other jobs take half the cores
#   BENCH_STEPS=10 BENCH_REPEATS=3 scripts/bench.sh
#   BENCH_CASES="siglip:f32" BENCH_GEN_BATCHES="" BENCH_CHECKPOINT=0 scripts/bench.sh
#   scripts/bench.sh --ratios   # vlm only: bf16 vs f32 and checkpointing on vs off
#
# --ratios runs `vlm bench model` alone (no PyTorch) on each model of
# BENCH_RATIO_MODELS in the configurations f32, bf16, f32 + checkpointing and
# bf16 + checkpointing, back to back in that order, BENCH_REPEATS rounds, and
# prints per model the median step time, peak RSS and arena peak of each, and
# the ratios bf16/f32 (time, RSS, arena) and checkpointing on/off, both pooled
# over every timed step and as the median of the per-round ratios (robust to
# load that drifts between rounds), with the load average of each run.
#
# Builds build-bench/ (Release) if needed, then for each model x precision runs
# `vlm bench model` and scripts/bench_torch.py alternately (vlm, torch, vlm,
# torch, ...: BENCH_REPEATS rounds, so drift and other load hit both), each
# run doing BENCH_WARMUP untimed and BENCH_STEPS timed training steps; then
# greedy generation with the KV cache at each batch of BENCH_GEN_BATCHES the
# same way; then gradient checkpointing off and on (ours, f32, back to back).
# Both sides get the same thread count (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
# --threads) and OpenBLAS kernels: Debian's torch does its f32 GEMMs in the
# OpenBLAS behind libblas.so.3 (pthread build; BLAS_INFO=generic) and its bf16
# GEMMs in oneDNN (MKL-DNN 2.6), so OPENBLAS_CORETYPE=SkylakeX is exported for
# it on AVX-512 CPUs (machine images may export Haswell: half speed); vlm picks
# SkylakeX itself and gets VLM_BLAS_CORETYPE set to the same value.
#
# Environment (defaults in brackets):
#   BENCH_STEPS [4]  BENCH_WARMUP [1]  BENCH_REPEATS [2]   training runs
#   BENCH_THREADS [nproc]  BENCH_CORETYPE [SkylakeX on AVX-512, else unset]
#   BENCH_CASES ["siglip:f32 siglip:bf16 caption:f32 caption:bf16"]
#   BENCH_GEN_BATCHES ["1 8"]  BENCH_GEN_TOKENS [32]  BENCH_GEN_STEPS [3] (timed
#     generations per run, after 1 untimed)
#   BENCH_CHECKPOINT [1]  (0 skips the checkpointing runs)
#   BENCH_RATIO_MODELS ["siglip caption"]  (--ratios)
#   OMP_WAIT_POLICY [unset]  passed to both sides: on a machine shared with other jobs,
#     `passive` keeps waiting threads from spinning on cores the running ones need
#     (steps then vary far less); on an idle machine the default spin is a bit faster
#   BENCH_BATCH [unset: 64 siglip, 32 captioner]  (training batch, for quick checks)
#   BENCH_BUILD [build-bench]  BENCH_OUT [BENCH_BUILD/bench-DATE]  (logs, JSON)
#   BENCH_PYTHON [/usr/bin/python3]
# Each run's output is in BENCH_OUT/NAME.log and its JSON line in NAME.json; the
# tables go to BENCH_OUT/summary.txt. `scripts/bench.sh --report DIR` reprints them
# (either kind).
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT_ONLY=""
RATIOS=""
if [ "${1:-}" = "--report" ] && [ -n "${2:-}" ]; then
  REPORT_ONLY=$2   # reprint DIR's tables
elif [ "${1:-}" = "--ratios" ] && [ $# -eq 1 ]; then
  RATIOS=1
elif [ $# -gt 0 ]; then
  echo "usage: scripts/bench.sh            (settings: BENCH_* variables, see the top of this file)" >&2
  echo "       scripts/bench.sh --ratios   (vlm only: bf16/f32 and checkpointing on/off)" >&2
  echo "       scripts/bench.sh --report DIR" >&2
  exit 2
fi

STEPS=${BENCH_STEPS:-4}
WARMUP=${BENCH_WARMUP:-1}
REPEATS=${BENCH_REPEATS:-2}
THREADS=${BENCH_THREADS:-$(nproc)}
CASES=${BENCH_CASES-"siglip:f32 siglip:bf16 caption:f32 caption:bf16"}
GEN_BATCHES=${BENCH_GEN_BATCHES-"1 8"}
GEN_TOKENS=${BENCH_GEN_TOKENS:-32}
GEN_STEPS=${BENCH_GEN_STEPS:-3}
CHECKPOINT=${BENCH_CHECKPOINT:-1}
RATIO_MODELS=${BENCH_RATIO_MODELS-"siglip caption"}
BATCH=()
if [ -n "${BENCH_BATCH:-}" ]; then BATCH=(--batch "$BENCH_BATCH"); fi
BUILD=${BENCH_BUILD:-build-bench}
OUT=${BENCH_OUT:-$BUILD/bench-$(date +%Y%m%d-%H%M%S)}
PY=${BENCH_PYTHON:-/usr/bin/python3}
if [ -z "${BENCH_CORETYPE+x}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then BENCH_CORETYPE=SkylakeX; else BENCH_CORETYPE=""; fi
fi

report() { # DIR: the tables from DIR's JSON files
  local out=$1 threads core steps warmup repeats
  read -r threads core steps warmup repeats <"$out/params"
  "$PY" - "$out" "$threads" "$core" "$steps" "$warmup" "$repeats" <<'EOF'
import glob, json, os, statistics as st, sys

out, threads, core, steps, warmup, repeats = sys.argv[1:7]


def load(pattern):
    rows = []
    for p in sorted(glob.glob(os.path.join(out, pattern))):
        with open(p) as f:
            rows.append(json.load(f))
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def model_summary(rows):
    """Pooled over runs: every timed step of every run."""
    if not rows:
        return None
    steps_ = [s for r in rows for s in r["step_s"]]
    m = st.median(steps_)
    prec = rows[0]["precision"]
    peak = med([r["peak_gflops_" + ("bf16" if prec == "bf16" else "f32")] for r in rows])
    gf = rows[0]["gflop_per_step"] / m
    return {"step": m, "min": min(steps_), "ips": rows[0]["batch"] / m, "gflops": gf,
            "peak": peak, "mfu": gf / peak if peak else None,
            "rss": max(r["peak_rss_mib"] for r in rows), "rss0": med([r["start_rss_mib"] for r in rows]),
            "arena": med([r.get("arena_peak_mib") for r in rows]),
            "cpu": med([r["cpu_util"] for r in rows]), "n": len(steps_), "batch": rows[0]["batch"],
            "gflop": rows[0]["gflop_per_step"], "loss": med([r["first_loss"] for r in rows]),
            "ck": rows[0].get("checkpoint_effect")}


la0 = open(os.path.join(out, "load_start")).read().split()
la1 = open(os.path.join(out, "load_end")).read().split()
print("vlm vs PyTorch (Debian torch 1.13), %s threads, OPENBLAS_CORETYPE %s; %s timed steps after %s "
      "warm-up per run, %s runs per side, alternating vlm/torch; medians pooled over every timed step"
      % (threads, core, steps, warmup, repeats))
print("load average (1/5/15 min): %s at start, %s at the end; cpu/wall = process CPU time per step / "
      "(wall time x threads): below ~0.9 means other processes took our cores" % (" ".join(la0), " ".join(la1)))
cpu = "unknown CPU"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
some = load("*-vlm-*.json")[:1] + load("*-torch-*.json")[:1]
print("machine: %s, %d cores; BLAS kernels: %s" % (cpu, os.cpu_count(), "; ".join(
    "%s %s" % (r["framework"], r.get("blas", "?")) for r in some)))
print()
targets = []
for case in ("siglip:f32", "siglip:bf16", "caption:f32", "caption:bf16"):
    model, prec = case.split(":")
    a = model_summary(load("model-%s-%s-vlm-*.json" % (model, prec)))
    b = model_summary(load("model-%s-%s-torch-*.json" % (model, prec)))
    if not a and not b:
        continue
    ref = a or b
    print("== %s %s: batch %d, %.1f GFLOP/step (model FLOPs), %s timed steps per side =="
          % (model, prec, ref["batch"], ref["gflop"], "/".join(str(x["n"]) if x else "0" for x in (a, b))))
    print("%-24s %12s %12s %10s" % ("", "vlm", "torch", "vlm/torch"))
    def row(label, key, spec, show_ratio=False, pct=False):
        va, vb = (a or {}).get(key), (b or {}).get(key)
        if pct:
            va, vb = (None if va is None else 100 * va), (None if vb is None else 100 * vb)
        print("%-24s %12s %12s %10s" % (label, fmt(va, spec), fmt(vb, spec),
                                        fmt(ratio(va, vb), ".2f") if show_ratio else ""))
    row("s/step (median)", "step", ".3f", True)
    row("s/step (min)", "min", ".3f", True)
    row("images/s", "ips", ".2f", True)
    row("GFLOP/s", "gflops", ".1f", True)
    row("GEMM peak GFLOP/s (%s)" % prec, "peak", ".1f", True)
    row("MFU %", "mfu", ".1f", False, True)
    row("peak RSS MiB", "rss", ".0f", True)
    row("RSS at start MiB", "rss0", ".0f")
    row("arena peak MiB", "arena", ".0f")
    row("cpu/wall", "cpu", ".2f")
    row("first loss", "loss", ".3f")
    print()
    if a and b:
        lim = 0.7 if prec == "f32" else 0.9
        targets.append(("%s %s time <= %.1fx torch" % (model, prec, lim), a["step"] / b["step"], lim))
        targets.append(("%s %s peak RSS <= 0.7x torch" % (model, prec), a["rss"] / b["rss"], 0.7))

gen = []
for p in sorted(glob.glob(os.path.join(out, "gen-b*-vlm-1.json"))):
    gen.append(int(os.path.basename(p).split("-")[1][1:]))
if gen:
    print("== greedy generation, captioner, KV cache, f32, %s new tokens after a %s-position prefix ==" % (
        load("gen-b%d-vlm-*.json" % gen[0])[0]["tokens"], load("gen-b%d-vlm-*.json" % gen[0])[0]["prefix_len"]))
    print("decode tokens/s = batch x decode steps / their time; end to end adds the prefix (towers, fusion) "
          "and the prefill")
    print("%-6s %-26s %-26s %-16s" % ("", "decode tokens/s", "end-to-end tokens/s", "ms/decode step"))
    print("%-6s %8s %8s %9s %8s %8s %9s %8s %8s" % ("batch", "vlm", "torch", "vlm/torch", "vlm", "torch",
                                                   "vlm/torch", "vlm", "torch"))
    for bsz in sorted(gen):
        A, B = load("gen-b%d-vlm-*.json" % bsz), load("gen-b%d-torch-*.json" % bsz)
        da, db = med([r["decode_tokens_per_s"] for r in A]), med([r["decode_tokens_per_s"] for r in B])
        ea, eb = med([r["e2e_tokens_per_s"] for r in A]), med([r["e2e_tokens_per_s"] for r in B])
        ma, mb = med([r["ms_per_step"] for r in A]), med([r["ms_per_step"] for r in B])
        print("%-6d %8s %8s %9s %8s %8s %9s %8s %8s" % (
            bsz, fmt(da, ".1f"), fmt(db, ".1f"), fmt(ratio(da, db), ".2f"), fmt(ea, ".1f"),
            fmt(eb, ".1f"), fmt(ratio(ea, eb), ".2f"), fmt(ma, ".2f"), fmt(mb, ".2f")))
        if da and db:
            targets.append(("decode tokens/s >= torch, batch %d" % bsz, da / db, None))
    print()

ck = [(m, model_summary(load("ckpt-off-%s-vlm.json" % m)), model_summary(load("ckpt-on-%s-vlm.json" % m)))
      for m in ("siglip", "caption")]
ck = [c for c in ck if c[1] and c[2]]
if ck:
    print("== gradient checkpointing (vlm, f32, batch %d / %d): one run off, then one on ==" % (ck[0][1]["batch"], ck[-1][1]["batch"]))
    print("%-8s %10s %10s %7s %12s %12s %7s %11s %11s  %s" % (
        "model", "s/step off", "on", "on/off", "RSS MiB off", "on", "on/off", "arena off", "on", "towers"))
    for m, off, on in ck:
        print("%-8s %10.3f %10.3f %7.2f %12.0f %12.0f %7.2f %11.0f %11.0f  %s" % (
            m, off["step"], on["step"], on["step"] / off["step"], off["rss"], on["rss"],
            on["rss"] / off["rss"], off["arena"] or 0, on["arena"] or 0, on["ck"]))
    print()

if targets:
    print("== targets (issue): f32 time <= 0.7x, bf16 time <= 0.9x, peak RSS <= 0.7x, decode tokens/s >= 1x ==")
    for name, v, lim in targets:
        ok = v >= 1.0 if lim is None else v <= lim
        print("%-40s %6.2f  %s" % (name, v, "met" if ok else "NOT met"))
EOF
}
report_ratios() { # DIR: the --ratios tables from DIR's JSON files
  local out=$1 threads core steps warmup repeats
  read -r threads core steps warmup repeats <"$out/params"
  "$PY" - "$out" "$threads" "$core" "$steps" "$warmup" "$repeats" <<'EOF'
import glob, json, os, statistics as st, sys

out, threads, core, steps, warmup, repeats = sys.argv[1:7]
CONFIGS = [("f32", "f32"), ("bf16", "bf16"), ("f32+ck", "f32, checkpointing"),
           ("bf16+ck", "bf16, checkpointing")]


def runs(model, cfg):
    """{round: json} of one configuration."""
    got = {}
    for p in glob.glob(os.path.join(out, "ratio-%s-%s-*.json" % (model, cfg))):
        with open(p) as f:
            got[int(p.rsplit("-", 1)[1][:-5])] = json.load(f)
    return got


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


la0 = open(os.path.join(out, "load_start")).read().split()
la1 = open(os.path.join(out, "load_end")).read().split()
print("vlm only: bf16 vs f32, gradient checkpointing on vs off; %s threads, OPENBLAS_CORETYPE %s; "
      "%s timed steps after %s warm-up per run, %s rounds of back-to-back runs" % (
          threads, core, steps, warmup, repeats))
wp = os.path.join(out, "wait_policy")
print("load average (1/5/15 min): %s at start, %s at the end; cpu/wall below ~0.9: other processes "
      "took our cores (the runs of one round see about the same load); OMP_WAIT_POLICY %s" % (
          " ".join(la0), " ".join(la1), open(wp).read().strip() if os.path.exists(wp) else "?"))
print()
for model in ("siglip", "caption"):
    data = {c: runs(model, c) for c, _ in CONFIGS}
    if not any(data.values()):
        continue
    some = next(r for d in data.values() for r in d.values())
    print("== %s (%s): batch %d, %.1f GFLOP/step ==" % (model, some["config"], some["batch"],
                                                       some["gflop_per_step"]))
    print("%-20s %8s %8s %8s %8s %9s %8s %6s  %s" % (
        "", "s/step", "min", "cpu-s", "RSS MiB", "arena MiB", "cpu/wall", "load1", "checkpointing"))
    summ = {}
    for c, label in CONFIGS:
        d = data[c]
        if not d:
            continue
        steps_ = [s for r in d.values() for s in r["step_s"]]
        cpus = [s for r in d.values() for s in r.get("cpu_s", [])]
        summ[c] = {"step": st.median(steps_), "rss": max(r["peak_rss_mib"] for r in d.values()),
                   "arena": max(r["arena_peak_mib"] for r in d.values()),
                   "cpu": st.median(cpus) if cpus else None,
                   "round": {k: st.median(r["step_s"]) for k, r in d.items()}}
        loads = [float(r["loadavg"].split()[0]) for r in d.values() if r.get("loadavg")]
        print("%-20s %8.3f %8.3f %8s %8.0f %9.0f %8.2f %6s  %s" % (
            label, summ[c]["step"], min(steps_), fmt(summ[c]["cpu"], ".3f"), summ[c]["rss"],
            summ[c]["arena"],
            st.median(r["cpu_util"] for r in d.values()),
            fmt(st.median(loads) if loads else None, ".2f"),
            next(iter(d.values())).get("checkpoint_effect", "off")))

    def show(name, a, b):
        if a not in summ or b not in summ:
            return
        A, B = summ[a], summ[b]
        paired = [A["round"][k] / B["round"][k] for k in A["round"] if k in B["round"]]
        print("%-30s %7s %9s %7s %7s %7s" % (
            name, fmt(ratio(A["step"], B["step"]), ".3f"),
            fmt(st.median(paired) if paired else None, ".3f"), fmt(ratio(A["cpu"], B["cpu"]), ".3f"),
            fmt(ratio(A["rss"], B["rss"]), ".3f"), fmt(ratio(A["arena"], B["arena"]), ".3f")))
    print()
    print("%-30s %7s %9s %7s %7s %7s" % ("ratio", "time", "time/rnd", "cpu-s", "RSS", "arena"))
    show("bf16 / f32", "bf16", "f32")
    show("f32: checkpointing on / off", "f32+ck", "f32")
    show("bf16: checkpointing on / off", "bf16+ck", "bf16")
    if "f32" in summ and "bf16" in summ:
        rnd = [summ["f32"]["round"][k] / summ["bf16"]["round"][k]
               for k in summ["f32"]["round"] if k in summ["bf16"]["round"]]
        print("bf16 speedup over f32: %.2fx (median step times), %.2fx (median of the per-round "
              "ratios)" % (summ["f32"]["step"] / summ["bf16"]["step"], st.median(rnd)))
    print("(time/rnd: median over rounds of the ratio of the two runs' median step times; cpu-s: "
          "median process CPU seconds per step, the work done whatever the load, when waiting "
          "threads sleep: OMP_WAIT_POLICY=passive)")
    print()
EOF
}
if [ -n "$REPORT_ONLY" ]; then
  if [ -f "$REPORT_ONLY/ratios" ]; then report_ratios "$REPORT_ONLY"; else report "$REPORT_ONLY"; fi
  exit 0
fi

# ---- build (incremental; a broken tree with a binary already there only warns) ----
if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
       cmake --build "$BUILD" -j"$(nproc)" --target vlm >"$BUILD/bench-build.log" 2>&1; }; then
  if [ -x "$BUILD/vlm" ]; then
    echo "bench: warning: the build failed (see $BUILD/bench-build.log); using the existing $BUILD/vlm" >&2
  else
    echo "bench: error: the build failed (see $BUILD/bench-build.log)" >&2
    exit 1
  fi
fi
if [ -z "$RATIOS" ]; then
  "$PY" -c "import torch" 2>/dev/null || { echo "bench: error: $PY has no torch (apt-get install python3-torch)" >&2; exit 1; }
fi
mkdir -p "$OUT"

export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
if [ -n "$BENCH_CORETYPE" ]; then
  export OPENBLAS_CORETYPE=$BENCH_CORETYPE VLM_BLAS_CORETYPE=$BENCH_CORETYPE
fi

config_of() { case $1 in siglip) echo configs/bench-siglip.json ;; caption) echo configs/bench-caption.json ;; *) echo "bench: unknown model $1" >&2; exit 2 ;; esac; }

# run NAME CMD...: runs CMD with its output in OUT/NAME.log (and a progress line
# here); its last JSON line goes to OUT/NAME.json. A failed run stops the script.
run() {
  local name=$1; shift
  printf 'bench: %-28s ' "$name"
  local t0=$SECONDS
  if ! "$@" >"$OUT/$name.log" 2>&1; then
    echo "FAILED"; tail -5 "$OUT/$name.log" >&2; exit 1
  fi
  grep '^{' "$OUT/$name.log" | tail -1 >"$OUT/$name.json"
  echo "$((SECONDS - t0)) s (load $(cut -d' ' -f1 /proc/loadavg))"
}

echo "bench: threads $THREADS, OPENBLAS_CORETYPE ${BENCH_CORETYPE:-(default)}, $STEPS steps after $WARMUP warm-up x $REPEATS runs each; logs in $OUT"
cut -d' ' -f1-3 /proc/loadavg >"$OUT/load_start"
echo "$THREADS ${BENCH_CORETYPE:-default} $STEPS $WARMUP $REPEATS" >"$OUT/params"
echo "${OMP_WAIT_POLICY:-default}" >"$OUT/wait_policy"
START=$SECONDS

if [ -n "$RATIOS" ]; then
  touch "$OUT/ratios"
  for r in $(seq 1 "$REPEATS"); do
    for model in $RATIO_MODELS; do
      cfg=$(config_of "$model")
      for c in f32 bf16 f32+ck bf16+ck; do
        ck=(); if [ "${c#*+}" = ck ]; then ck=(--checkpoint); fi
        run "ratio-$model-$c-$r" "$BUILD/vlm" bench model --config "$cfg" --precision "${c%+ck}" \
          "${ck[@]}" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" --peak-size 64 \
          "${BATCH[@]}"
      done
    done
  done
  cut -d' ' -f1-3 /proc/loadavg >"$OUT/load_end"
  echo "bench: done in $((SECONDS - START)) s"
  echo
  report_ratios "$OUT" | tee "$OUT/summary.txt"
  exit 0
fi

for c in $CASES; do
  model=${c%%:*}; prec=${c##*:}; cfg=$(config_of "$model")
  for r in $(seq 1 "$REPEATS"); do
    run "model-$model-$prec-vlm-$r" "$BUILD/vlm" bench model --config "$cfg" --precision "$prec" \
      --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "${BATCH[@]}"
    run "model-$model-$prec-torch-$r" "$PY" scripts/bench_torch.py model --config "$cfg" \
      --precision "$prec" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "${BATCH[@]}"
  done
done

for b in $GEN_BATCHES; do
  for r in $(seq 1 "$REPEATS"); do
    run "gen-b$b-vlm-$r" "$BUILD/vlm" bench generate --config configs/bench-caption.json \
      --batch "$b" --tokens "$GEN_TOKENS" --steps "$GEN_STEPS" --warmup 1 --threads "$THREADS"
    run "gen-b$b-torch-$r" "$PY" scripts/bench_torch.py generate --config configs/bench-caption.json \
      --batch "$b" --tokens "$GEN_TOKENS" --steps "$GEN_STEPS" --warmup 1 --threads "$THREADS"
  done
done

if [ "$CHECKPOINT" != 0 ]; then
  # off and on back to back (f32), so both see the same load
  for model in siglip caption; do
    cfg=$(config_of "$model")
    run "ckpt-off-$model-vlm" "$BUILD/vlm" bench model --config "$cfg" --precision f32 \
      --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "${BATCH[@]}"
    run "ckpt-on-$model-vlm" "$BUILD/vlm" bench model --config "$cfg" --precision f32 \
      --checkpoint --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "${BATCH[@]}"
  done
fi
cut -d' ' -f1-3 /proc/loadavg >"$OUT/load_end"
echo "bench: done in $((SECONDS - START)) s"
echo

# ---- tables -------------------------------------------------------------------------
report "$OUT" | tee "$OUT/summary.txt"
