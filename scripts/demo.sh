#!/usr/bin/env bash
# scripts/demo.sh - the out-of-the-box run, on a fresh Debian machine:
#  1. installs what is missing and builds (scripts/setup.sh);
#  2. pretrains SigLIP-style towers on Fashion-MNIST with the default recipe
#     (configs/default.json; the dataset is prepared from Debian's
#     dataset-fashion-mnist package on first use) and prints zero-shot top-1
#     accuracy on the 10,000 test images;
#  3. fine-tunes a captioner on the synthetic `shapes` dataset
#     (configs/finetune-shapes.json) and prints held-out BLEU-4 and CIDEr-D with
#     sample captions;
#  4. uses both models from the command line (classify, caption) and draws the
#     curves (scripts/plot.sh).
# Everything goes into runs/demo-YYYYmmdd-HHMMSS/ (nothing earlier is touched);
# the datasets are cached in $VLM_DATA_DIR (default ./data_cache).
#
#   scripts/demo.sh            # the full demo (about 15 minutes on 2 cores)
#   scripts/demo.sh --quick    # a few steps of each, to check the pipeline (~2 min)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
  "") ;;
  --quick) quick=1 ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/demo.sh [--quick]" >&2; exit 2 ;;
esac

t0=$SECONDS
elapsed() { local s=$((SECONDS - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
banner() { printf '\n==== %s\n' "$*"; }

banner "1/4 install and build"
scripts/setup.sh >/tmp/vlm-demo-setup.$$.log 2>&1 || {
  tail -30 /tmp/vlm-demo-setup.$$.log; echo "error: setup failed (log above)" >&2; exit 1; }
rm -f /tmp/vlm-demo-setup.$$.log
vlm=build/vlm
echo "built $vlm in $(elapsed $t0)"

data=${VLM_DATA_DIR:-data_cache}
out=runs/demo-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
pre=() fin=()
if [ $quick = 1 ]; then
  pre=(--set train.steps=30 --set train.optim.warmup_steps=5 --set train.eval_every=0)
  fin=(--set train.steps=30 --set train.optim.warmup_steps=5 --set train.eval_every=0)
fi

banner "2/4 contrastive pretraining on Fashion-MNIST (configs/default.json)"
t1=$SECONDS
$vlm pretrain --set out="$out/fmnist" "${pre[@]}" | tee "$out/pretrain.log"
train_time=$(elapsed $t1)
top1=$(grep -A3 "(final)" "$out/pretrain.log" | grep -o "top-1 [0-9.]*%" | head -1)

banner "3/4 caption fine-tuning on shapes (configs/finetune-shapes.json)"
t2=$SECONDS
if [ ! -e "$data/shapes.h5" ]; then
  $vlm prepare shapes --count 20000 --val-fraction 0.05 -o "$data/shapes.h5" --quiet
fi
$vlm finetune -c configs/finetune-shapes.json --set data.train="$data/shapes.h5" \
  --set data.val="$data/shapes-val.h5" --set out="$out/captioner" "${fin[@]}" |
  tee "$out/finetune.log"
caption_time=$(elapsed $t2)
bleu=$(grep -A4 "(final)" "$out/finetune.log" | grep -o "BLEU-4 [0-9.]*" | head -1)
cider=$(grep -A4 "(final)" "$out/finetune.log" | grep -o "CIDEr-D [0-9.]*" | head -1)

banner "4/4 the models from the command line"
for q in "a photo of an ankle boot" "a photo of a bag"; do
  echo "vlm retrieve --text \"$q\" (test images, best 3):"
  $vlm retrieve --model "$out/fmnist" --dataset "$data/fashion-mnist-test.h5" --text "$q" -k 3
done
echo "vlm caption (first 5 held-out shapes images):"
$vlm caption --model "$out/captioner" --dataset "$data/shapes-val.h5" --limit 5
scripts/plot.sh "$out/fmnist" || true
scripts/plot.sh "$out/captioner" || true

banner "summary ($out)"
echo "Fashion-MNIST zero-shot (10,000 test images): ${top1:-?}  (pretraining $train_time)"
echo "shapes captioner (held-out): ${bleu:-BLEU-4 ?}, ${cider:-CIDEr-D ?}  (prepare + fine-tuning $caption_time)"
echo "total: $(elapsed $t0)"
