"""Device selection and a record of where a job ran."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

import torch

from imagebench.errors import ConfigError

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def select_device(requested: str) -> torch.device:
    """Return the torch device for ``requested`` ('auto', 'cpu', 'cuda' or 'cuda:N').

    'auto' takes the first CUDA device when one is visible and the CPU
    otherwise. An explicit CUDA request on a machine without CUDA is an error
    rather than a silent fallback, so that a CPU run never passes for a GPU one.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"evaluation.device: {requested!r} was requested but no CUDA device is visible; "
            "use device: auto or cpu, or run the job on a GPU node"
        )
    return device


def resolve_amp_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in AMP_DTYPES:
        raise ConfigError(f"amp_dtype: {name!r} is not allowed; use one of {', '.join(AMP_DTYPES)} or null")
    return AMP_DTYPES[name]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model_name() or platform.processor() or platform.machine()


def _cpu_model_name() -> str | None:
    """Return the CPU model from /proc/cpuinfo (Linux), e.g. 'AMD EPYC 7B13', or None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def run_record(device: torch.device) -> dict[str, Any]:
    """Describe where this job ran: host, device, SLURM job id (None outside SLURM)."""
    return {
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": device_name(device),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "torch_threads": torch.get_num_threads(),
    }


def library_versions() -> dict[str, str]:
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__}
