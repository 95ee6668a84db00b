"""ONNX export of a fitted CMCL model, parity check, and hash-verified inference sessions.

Two graphs per run, both with a dynamic batch axis and the weights embedded in the file
(``external_data=False``; the models are a few MB, far below ONNX's 2 GB protobuf limit):

* ``encoder.onnx``: ``(x [n, C, H, W] float32 in [0, 1], u [n, d] float32 raw values)`` ->
  ``z [n, m]``, the posterior mean E[z | x, u] (``CMCL.encoder_module()``);
* ``decoder.onnx``: ``z [n, m]`` -> image ``[n, C, H, W]`` in [0, 1] (``CMCL.decoder_module()``).

Export uses the ``torch.export`` based exporter (``dynamo=True``). Parity is measured with
onnxruntime on the run's own images against eager PyTorch; the maximum absolute difference goes
into the run's metrics. The sha256 of each file is recorded in ``cmcl_artifacts``, and
:func:`load_session` refuses a file whose hash differs, so a swapped or corrupted model is never
used to score patients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from db.records import ArtifactRow
from pipeline.errors import DataError
from pipeline.model.artifacts import file_artifact, sha256_file

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
OPSET = 18
PARITY_TARGET = 1e-4  # max |onnx - torch| accepted without a warning


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch."""

    encoder: ArtifactRow
    decoder: ArtifactRow
    encoder_max_abs_diff: float
    decoder_max_abs_diff: float
    provider: str

    def metrics(self) -> dict[str, float | str]:
        """The parity figures for the run's metrics JSON."""
        return {
            "onnx_encoder_max_abs_diff": self.encoder_max_abs_diff,
            "onnx_decoder_max_abs_diff": self.decoder_max_abs_diff,
            "onnx_parity_ok": max(self.encoder_max_abs_diff, self.decoder_max_abs_diff)
            <= PARITY_TARGET,
            "onnx_provider": self.provider,
        }


def _export(module: torch.nn.Module, args: tuple, names: list[str], out: list[str], path: Path):
    batch = torch.export.Dim("batch")
    dynamic = {name: {0: batch} for name in names}
    module = module.to("cpu").eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names,
            output_names=out,
            dynamic_shapes=dynamic,
            dynamo=True,
            external_data=False,
            opset_version=OPSET,
            verbose=False,
        )


def export_onnx(
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    images: np.ndarray,
    u: np.ndarray,
    out_dir: Path,
    *,
    parity_samples: int = 256,
) -> ExportResult:
    """Export encoder and decoder to ONNX and check them against eager PyTorch.

    Args:
        encoder: ``CMCL.encoder_module()``: forward(x [n, C, H, W], u [n, d]) -> z [n, m].
        decoder: ``CMCL.decoder_module()``: forward(z [n, m]) -> images [n, C, H, W].
        images: the run's images ``[n, C, H, W]`` (memmap fine); the first ``parity_samples``
            rows are used for the parity check.
        u: the run's raw clinical values ``[n, d]``.
        out_dir: the run's folder; ``encoder.onnx`` and ``decoder.onnx`` are written there.
        parity_samples: rows used for the parity check (also exercises a batch size other
            than the export example's, so the dynamic axis is tested).

    Returns:
        The two artifacts with their sha256 and the parity figures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = max(1, min(parity_samples, len(u)))
    x = torch.as_tensor(np.asarray(images[:k]), dtype=torch.float32)  # [k, C, H, W]
    uu = torch.as_tensor(np.asarray(u[:k]), dtype=torch.float32)  # [k, d]
    enc_path, dec_path = out_dir / ENCODER_FILE, out_dir / DECODER_FILE
    ex = min(2, k)  # example batch differs from the parity batch: checks the dynamic axis
    _export(encoder, (x[:ex], uu[:ex]), ["x", "u"], ["z"], enc_path)
    with torch.no_grad():
        z_ref = encoder.to("cpu")(x, uu)  # [k, m]
        _export(decoder, (z_ref[:ex],), ["z"], ["image"], dec_path)
        img_ref = decoder.to("cpu")(z_ref)  # [k, C, H, W]
    enc_art = file_artifact(enc_path, out_dir, "onnx")
    dec_art = file_artifact(dec_path, out_dir, "onnx")
    enc_sess = load_session(enc_path, enc_art.sha256)
    dec_sess = load_session(dec_path, dec_art.sha256)
    z_onnx = enc_sess.run(["z"], {"x": x.numpy(), "u": uu.numpy()})[0]  # [k, m]
    img_onnx = dec_sess.run(["image"], {"z": z_ref.numpy()})[0]  # [k, C, H, W]
    enc_diff = float(np.max(np.abs(z_onnx - z_ref.numpy())))
    dec_diff = float(np.max(np.abs(img_onnx - img_ref.numpy())))
    provider = enc_sess.get_providers()[0]
    level = logging.INFO if max(enc_diff, dec_diff) <= PARITY_TARGET else logging.WARNING
    logger.log(
        level,
        "ONNX parity on %d samples (%s): encoder max |diff| %.2e, decoder %.2e (target %.0e)",
        k,
        provider,
        enc_diff,
        dec_diff,
        PARITY_TARGET,
    )
    return ExportResult(enc_art, dec_art, enc_diff, dec_diff, provider)


def available_providers() -> list[str]:
    """Execution providers to ask for: CUDA first when this onnxruntime build has it."""
    import onnxruntime as ort  # deferred: an optional extra (cpu or gpu build), heavy to load

    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: load CUDA/cuDNN from torch
        try:
            ort.preload_dlls()
        except Exception as err:  # noqa: BLE001 - a missing CUDA library just means CPU
            logger.debug("onnxruntime.preload_dlls failed: %s", type(err).__name__)
    have = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]
    return wanted or ["CPUExecutionProvider"]


def load_session(path: Path, expected_sha256: str, *, intra_op_threads: int | None = None):
    """Open an ONNX Runtime session, refusing a file whose sha256 is not the recorded one.

    Args:
        path: the ``.onnx`` file.
        expected_sha256: the hash recorded in ``cmcl_artifacts`` when the run exported it.
        intra_op_threads: CPU threads for the session (onnxruntime's default when None).

    Returns:
        An ``onnxruntime.InferenceSession``; the provider actually used is logged.

    Raises:
        DataError: the file is missing or its hash differs from the recorded one.
    """
    import onnxruntime as ort  # deferred: an optional extra (cpu or gpu build), heavy to load

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"the ONNX model {path.name} is missing from the run folder {path.parent}",
            "re-run `cmcl run` to export it again, or restore the run folder",
        )
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise DataError(
            f"{path.name} does not match the sha256 recorded for its run "
            f"(recorded {expected_sha256[:12]}..., found {actual[:12]}...): the file was "
            "changed or replaced",
            "restore the original file or re-run `cmcl run`; a modified model is never loaded",
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=available_providers())
    logger.info("ONNX Runtime session for %s uses %s", path.name, sess.get_providers()[0])
    return sess


def encode(session, images: np.ndarray, u: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Posterior means with an encoder session, batch by batch (memmaps are read per batch).

    Args:
        session: from :func:`load_session` on ``encoder.onnx``.
        images: ``[n, C, H, W]`` in [0, 1].
        u: raw clinical values ``[n, d]``.
        batch_size: rows per session call.

    Returns:
        ``[n, m]`` float32.
    """
    out = []
    for s in range(0, len(u), batch_size):
        x = np.ascontiguousarray(images[s : s + batch_size], dtype=np.float32)  # [b, C, H, W]
        uu = np.ascontiguousarray(u[s : s + batch_size], dtype=np.float32)  # [b, d]
        out.append(session.run(["z"], {"x": x, "u": uu})[0])  # [b, m]
    if not out:
        return np.zeros((0, session.get_outputs()[0].shape[1] or 0), dtype=np.float32)
    return np.concatenate(out, 0)
