#!/usr/bin/env bash
# scripts/plot.sh RUN_DIR [OUT_DIR] - draws a run's curves from RUN_DIR/metrics.jsonl
# with gnuplot into OUT_DIR (default RUN_DIR/plots):
#   loss.png  training loss per logged step and its running mean (loss_avg)
#   lr.png    learning rate (and the gradient norm on a second axis)
#   eval.png  every evaluation metric the run logged (zero-shot top-1/top-5,
#             retrieval R@k, BLEU-4, CIDEr-D), against the step
# metrics.jsonl holds one flat JSON object per line ("event": "train" | "eval"
# | ...), so awk is enough to turn it into columns; no jq or Python needed.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: scripts/plot.sh RUN_DIR [OUT_DIR]   (e.g. scripts/plot.sh runs/fmnist)" >&2
  [ $# -ge 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; } && exit 0
  exit 2
fi
run=$1
out=${2:-$run/plots}
metrics=$run/metrics.jsonl
[ -f "$metrics" ] || { echo "error: no metrics file $metrics (is $run a run directory?)" >&2; exit 1; }
command -v gnuplot >/dev/null ||
  { echo "error: gnuplot not found: install the Debian package gnuplot-nox (scripts/setup.sh does)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# columns KEY... < metrics.jsonl: for lines of one event, the values of KEYs
# (NaN where a key is absent), tab-separated.
columns() {
  local event=$1; shift
  awk -v event="$event" -v keys="$*" '
    function value(line, key,   m) {
      if (match(line, "\"" key "\":[^,}]*")) {
        m = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
        gsub(/"/, "", m)
        return m
      }
      return "NaN"
    }
    BEGIN { n = split(keys, k, " ") }
    index($0, "\"event\":\"" event "\"") {
      row = value($0, k[1])
      for (i = 2; i <= n; i++) row = row "\t" value($0, k[i])
      print row
    }'
}

columns train step loss loss_avg lr grad_norm <"$metrics" >"$tmp/train.tsv"
eval_keys="zeroshot_top1 zeroshot_top5 t2i_r1 t2i_r5 t2i_r10 i2t_r1 i2t_r5 i2t_r10 bleu4 cider"
columns eval step $eval_keys <"$metrics" >"$tmp/eval.tsv"
[ -s "$tmp/train.tsv" ] || { echo "error: $metrics has no training steps logged yet" >&2; exit 1; }

common="set terminal pngcairo size 900,560 font ',10'; set grid; set key top right;
set datafile separator '\t'; set datafile missing 'NaN'; set xlabel 'step'"
gnuplot -e "$common; set output '$out/loss.png'; set title 'training loss: $run';
  plot '$tmp/train.tsv' using 1:2 with lines lw 1 title 'loss',
       '' using 1:3 with lines lw 2 title 'running mean'"
gnuplot -e "$common; set output '$out/lr.png'; set title 'learning rate and gradient norm: $run';
  set ylabel 'lr'; set y2label 'grad norm'; set ytics nomirror; set y2tics;
  plot '$tmp/train.tsv' using 1:4 with lines lw 2 title 'lr' axes x1y1,
       '' using 1:5 with lines lw 1 title 'grad norm' axes x1y2"
written="$out/loss.png $out/lr.png"

if [ -s "$tmp/eval.tsv" ]; then
  # one curve per metric the run logged (columns that are not all NaN)
  plots=""
  col=2
  for key in $eval_keys; do
    if cut -f"$col" "$tmp/eval.tsv" | grep -qv NaN; then
      plots="$plots${plots:+, }'$tmp/eval.tsv' using 1:$col with linespoints title '${key//_/-}'"
    fi
    col=$((col + 1))
  done
  if [ -n "$plots" ]; then
    gnuplot -e "$common; set output '$out/eval.png'; set title 'evaluation: $run';
      set key bottom right; plot $plots"
    written="$written $out/eval.png"
  fi
fi
echo "wrote $written"
