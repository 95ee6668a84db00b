"""How a fit uses its device: numeric precision, determinism, threads, where the cohort lives.

* Precision (``CMCLConfig.precision``): ``fp32``, or ``bf16`` / ``fp16`` mixed precision with
  :func:`torch.autocast` around the representation modules (encoder, decoders, posterior,
  prior, classifier); the DAG (NOTEARS-MLP, ``h(W)``), the final structure solve and the
  orientation always run in float32 (:func:`float32`). ``fp16`` needs a gradient scaler
  (:func:`grad_scaler`); bf16 has float32's exponent range and does not.
* Determinism: CPU training is deterministic at a fixed thread count. On CUDA,
  ``deterministic: true`` asks torch for deterministic kernels (slower; cuBLAS then needs
  ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment, which the GPU image sets); otherwise
  cuDNN may pick the fastest kernels, which vary from run to run.
* The cohort (:class:`Cohort`): on CUDA the whole image array is copied to the device once when
  it takes at most :data:`DEVICE_MEMORY_SHARE` of the free device memory (in bf16/fp16 under
  mixed precision: 377k images of 128 x 128 are about 12 GB); otherwise each batch is read
  from the (memory-mapped) array into pinned host memory and copied asynchronously. On the
  CPU batches are read from the array as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

#: ``CMCLConfig.precision`` -> the autocast dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

#: Largest share of the free device memory the cohort may take to live on the device.
DEVICE_MEMORY_SHARE = 0.5

_LOAD_CHUNK = 4096  # rows per host-to-device copy when a cohort is moved to the device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the representation modules (a no-op for ``fp32``)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def float32(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: what runs inside (the DAG, ``h(W)``) computes in float32."""
    return torch.autocast(device.type, enabled=False)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (float16 gradients underflow); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@contextlib.contextmanager
def torch_settings(
    device: torch.device, num_threads: int | None, deterministic: bool
) -> Iterator[None]:
    """Torch's global settings for one fit, restored afterwards.

    Args:
        device: the fit's device.
        num_threads: CPU intra-op threads (None: leave torch's setting).
        deterministic: ask for deterministic kernels (CUDA; CPU kernels already are) and keep
            cuDNN from benchmarking; False lets cuDNN pick the fastest kernels.

    Raises:
        ValueError: ``deterministic`` on CUDA without ``CUBLAS_WORKSPACE_CONFIG`` set.
    """
    if deterministic and device.type == "cuda" and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        raise ValueError(
            "deterministic: true on CUDA needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the "
            "environment (cuBLAS reads it at start-up); export it, or set deterministic: false"
        )
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    bench, cudnn_det = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    if num_threads:
        torch.set_num_threads(num_threads)
    if device.type == "cuda":
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, cudnn_det


def placement(
    shape: tuple[int, ...], precision: str, device_type: str, free_bytes: int
) -> tuple[str, torch.dtype]:
    """Where a cohort of ``shape`` lives: (mode, dtype of a device copy).

    The array itself (``host``) off CUDA; on CUDA the whole cohort (``device``, in the mixed
    precision's dtype, else float32) when it takes at most :data:`DEVICE_MEMORY_SHARE` of
    ``free_bytes``, else ``pinned`` streaming.
    """
    dtype = PRECISIONS[precision] or torch.float32
    if device_type != "cuda":
        return "host", dtype
    need = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    return ("device" if need <= DEVICE_MEMORY_SHARE * free_bytes else "pinned"), dtype


class Cohort:
    """The training images, read by row indices as float32 tensors on the fit's device.

    Build one with :meth:`for_device`. Modes: ``host`` (rows read from the array and copied;
    the CPU path), ``device`` (the whole cohort in device memory, in ``storage_dtype``) and
    ``pinned`` (CUDA: rows gathered into one of two pinned host buffers, copied without
    blocking; the buffer is reused only after its copy has finished).

    Args:
        images: [n, C, H, W] array in [0, 1] (may be memory-mapped).
        device: where the batches go.
        mode: ``host``, ``device`` or ``pinned``.
        storage_dtype: dtype of the device copy (``device`` mode).
    """

    def __init__(
        self,
        images: np.ndarray,
        device: torch.device,
        mode: str = "host",
        storage_dtype: torch.dtype = torch.float32,
    ) -> None:
        if mode not in ("host", "device", "pinned"):
            raise ValueError(f"unknown cohort mode {mode!r}; use host, device or pinned")
        self.images = images
        self.device = torch.device(device)
        self.mode = mode
        self.shape = tuple(images.shape)
        self._stored: torch.Tensor | None = None
        self._buffers: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []
        self._turn = 0
        if mode == "device":
            self._stored = torch.empty(self.shape, dtype=storage_dtype, device=self.device)
            for start in range(0, self.shape[0], _LOAD_CHUNK):
                chunk = np.asarray(images[start : start + _LOAD_CHUNK], dtype=np.float32)
                self._stored[start : start + len(chunk)] = torch.from_numpy(chunk).to(
                    self.device, dtype=storage_dtype
                )

    @classmethod
    def for_device(
        cls,
        images: np.ndarray | Cohort,
        device: torch.device,
        precision: str = "fp32",
        free_bytes: int | None = None,
    ) -> Cohort:
        """A cohort in the mode :func:`placement` picks (``free_bytes`` measured when None)."""
        if isinstance(images, Cohort):
            return images
        device = torch.device(device)
        if device.type == "cuda" and free_bytes is None:
            free_bytes, _ = torch.cuda.mem_get_info(device)
        mode, dtype = placement(tuple(images.shape), precision, device.type, free_bytes or 0)
        return cls(images, device, mode, dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        """Images ``idx`` (sorted indices read sequentially from a memmap) as float32
        [len(idx), C, H, W] on the device."""
        if self._stored is not None:
            index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
            return self._stored.index_select(0, index).float()
        host = np.asarray(self.images[idx], dtype=np.float32)  # [b, C, H, W]
        if self.mode == "host":
            return torch.as_tensor(host, device=self.device)
        return self._pinned_copy(host)

    def _pinned_copy(self, host: np.ndarray) -> torch.Tensor:
        """Copy through one of two pinned buffers; wait for that buffer's previous copy."""
        if len(self._buffers) < 2 or self._buffers[self._turn][0].shape[0] < len(host):
            buf = torch.empty((max(len(host), 1), *self.shape[1:]), dtype=torch.float32)
            entry = (buf.pin_memory(), None)
            if len(self._buffers) < 2:
                self._buffers.append(entry)
            else:
                self._buffers[self._turn] = entry
        buf, done = self._buffers[self._turn]
        if done is not None:
            done.synchronize()  # the last copy out of this buffer has finished
        staged = buf[: len(host)]
        staged.copy_(torch.from_numpy(host))
        out = staged.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._buffers[self._turn] = (buf, event)
        self._turn = 1 - self._turn
        return out
