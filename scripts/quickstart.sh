#!/usr/bin/env bash
# The main job end to end on a small task: train a flow policy (FPO) on InvertedPendulum-v5, evaluate the
# checkpoint alone, export it (ONNX + TorchScript, parity-checked) and drive it through the real-time
# loop against a simulated robot in its own process. Outputs land in runs/quickstart-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
run="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
robopol train task=inverted_pendulum policy=fpo train.run_dir="$run" "$@"
robopol eval "$run" --episodes 10
robopol export "$run" "$run/export"
robopol deploy "$run/export" hardware=sim_inverted_pendulum --duration 20 --log "$run/deploy_log.csv"
echo "run folder: $run (checkpoints/, train.csv, eval.csv, learning_curve.png, eval.mp4, eval/result.json, eval/rollout.mp4, tensorboard/, export/, deploy_log.csv)"
