"""Which platform this machine is: an NVIDIA GPU is detected by a working `nvidia-smi -L`
or a `/dev/nvidia0` device, never by the CUDA compiler (dev machines have nvcc and no GPU)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def has_nvidia_gpu() -> bool:
    if Path("/dev/nvidia0").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def default_config_name() -> str:
    return "gpu.yaml" if has_nvidia_gpu() else "cpu.yaml"


if __name__ == "__main__":  # used by scripts/setup.sh
    print("gpu" if has_nvidia_gpu() else "cpu")
