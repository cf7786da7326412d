#!/usr/bin/env bash
# What a session lent a GPU runs (../shared/GPU-CHECKS.md), from the repository root:
#   bash benchmarks/gpu_checks.sh OUT_DIR [STAGE ...]
# Stages (default: all, in this order): env cuda_vs_cpu paper_scale compile_toy compile_bit stream decode probe.
# Each stage's output goes to OUT_DIR/<stage>.log (and .json where the script writes one).
# Needs the toy backbone in cache/toy_backbone (carry it) for cuda_vs_cpu.
set -u
out=${1:?usage: gpu_checks.sh OUT_DIR [STAGE ...]}
shift
mkdir -p "$out"
stages=${*:-env cuda_vs_cpu paper_scale compile_toy compile_bit stream decode probe}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=".:${PYTHONPATH:-}"
py=${PYTHON:-python3}
for stage in $stages; do
  echo "=== $stage $(date -u +%T)"
  case $stage in
    env)
      { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        $py -c "import sys, torch, timm; print(sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
        $py - <<'PY'
import torch
from toolkit._util.syncs import count_host_syncs
x = torch.ones(1 << 20)
with count_host_syncs("cuda") as pageable:
    x.to("cuda")
with count_host_syncs("cuda") as pinned:
    x.pin_memory().to("cuda", non_blocking=True)
with count_host_syncs("cuda") as item:
    torch.ones(3, device="cuda").sum().item()
print(f"sync counter: pageable copy {pageable.n}, pinned non-blocking copy {pinned.n}, .item() {item.n}")
PY
      } 2>&1 | tee "$out/env.log" ;;
    cuda_vs_cpu) timeout 420 $py benchmarks/cuda_vs_cpu.py --out /tmp/cuda_vs_cpu 2>&1 | tee "$out/cuda_vs_cpu.log" ;;
    paper_scale) timeout 420 $py benchmarks/gpu_paper_scale.py --json "$out/paper_scale.json" 2>&1 | tee "$out/paper_scale.log" ;;
    compile_toy) timeout 300 $py benchmarks/gpu_paper_scale.py --model toy_resnet --resolution 64 --compile \
                   --json "$out/compile_toy.json" 2>&1 | tee "$out/compile_toy.log" ;;
    compile_bit) timeout 540 $py benchmarks/gpu_paper_scale.py --compile --micro-batches auto --steps 20 \
                   --json "$out/compile_bit.json" 2>&1 | tee "$out/compile_bit.log" ;;
    stream) timeout 300 $py benchmarks/stream_scoring.py --dir /tmp 2>&1 | tee "$out/stream.log" ;;
    decode) $py benchmarks/decode_threads.py 2>&1 | tee "$out/decode.log" ;;
    probe) timeout 480 $py benchmarks/probe_speed.py --device cuda --runs 20,200,2000 --rounds 32 --seeds 1 \
             2>&1 | tee "$out/probe.log" ;;
    *) echo "unknown stage $stage" ;;
  esac
done
