# Sourced by the tools/ scripts: finds nvcc where the CUDA Toolkit puts it when it is not on PATH,
# so the CUDA component is built whenever the toolkit is installed.
if ! command -v nvcc >/dev/null 2>&1 && [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
jobs=$(nproc 2>/dev/null || echo 2)
