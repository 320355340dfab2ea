#!/usr/bin/env bash
# scripts/plot.sh on a small metrics.jsonl: three PNG files for a run with
# evaluations, two without; clear errors (exit 1) for a missing run directory
# and a metrics file with no training steps. Usage: test_plot.sh SOURCE_DIR
set -u
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }

mkdir -p "$tmp/run" "$tmp/noeval" "$tmp/empty"
for s in 1 2 3 4 5 6; do
  printf '{"event":"train","step":%d,"epoch":0,"loss":%s,"loss_avg":%s,"lr":0.001,"grad_norm":%d.5}\n' \
    "$s" "$((60 - s)).25" "$((70 - s)).5" "$s"
done >"$tmp/run/metrics.jsonl"
cp "$tmp/run/metrics.jsonl" "$tmp/noeval/metrics.jsonl"
echo '{"images":20,"zeroshot_top1":0.5,"zeroshot_top5":0.9,"event":"eval","step":3,"final":false}' >>"$tmp/run/metrics.jsonl"
echo '{"images":20,"bleu4":0.25,"cider":0.75,"event":"eval","step":6,"final":true}' >>"$tmp/run/metrics.jsonl"

out=$("$src/scripts/plot.sh" "$tmp/run" 2>&1) || fail "plot.sh exit $?: $out"
for f in loss lr eval; do is_png "$tmp/run/plots/$f.png" || fail "$f.png is not a PNG"; done

"$src/scripts/plot.sh" "$tmp/noeval" "$tmp/o2" >/dev/null 2>&1 || fail "no-eval run"
is_png "$tmp/o2/loss.png" || fail "no-eval loss.png"
[ ! -e "$tmp/o2/eval.png" ] || fail "eval.png drawn without evaluations"

out=$("$src/scripts/plot.sh" "$tmp/missing" 2>&1); st=$?
[ $st -eq 1 ] && [[ $out == *"$tmp/missing/metrics.jsonl"* ]] || fail "missing dir: exit $st, '$out'"
echo '{"event":"start"}' >"$tmp/empty/metrics.jsonl"
out=$("$src/scripts/plot.sh" "$tmp/empty" 2>&1); st=$?
[ $st -eq 1 ] && [[ $out == *"no training steps"* ]] || fail "no steps: exit $st, '$out'"
echo "plot.sh: ok"
