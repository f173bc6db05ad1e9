#!/usr/bin/env bash
# The CUDA paths no CPU machine can run, on a lent GPU machine (one GPU):
# preflight's host check (torch sees the GPU, a matmul on cuda:0), the
# example trained with nccl and --fp16, resumed from its checkpoint, exported.
# Usage: OUT=/some/dir bench/gpu_check.sh   (needs python3 with torch+CUDA)
set -u
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', '.'.join(map(str, torch.cuda.nccl.version())))"
nas=$(mktemp -d)
python3 gpufleet/launcher/hostcheck.py check \
  "{\"nas\": [{\"mount\": \"$nas\", \"read_only\": false}], \"gpus\": 1, \"rdzv\": null}" | tee "$out/hostcheck.json"
ckpt=$(mktemp -d)
for epochs in 8 12; do  # the second run resumes from the first one's checkpoint
  start=$(date +%s%N)
  python3 -m torch.distributed.run --standalone --nproc-per-node 1 \
    examples/intent_classifier/train.py --fp16 --epochs "$epochs" --checkpoint-dir "$ckpt" 2>&1 \
    | tee "$out/train-$epochs.log" | grep -E "resumed|device=|final|Error|Traceback"
  echo "run to $epochs epochs: $(( ($(date +%s%N) - start) / 1000000 )) ms wall (torchrun start included)"
done
ls -la "$ckpt"
