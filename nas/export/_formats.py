"""The files of an export folder: weights (safetensors), TorchScript and ONNX, each checked against the live model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nas.errors import LINE_LIMIT, NasError, first_line
from nas.snn.plain import plain_copy

SAFETENSORS_FILE = "weights.safetensors"
STATE_DICT_FILE = "state_dict.pt"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
TRACE_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4


def save_weights(model: nn.Module, folder: Path) -> str:
    """Write the model's state dict as safetensors (or ``state_dict.pt`` without it); returns the file name."""
    # Clones: safetensors refuses tensors that share storage, and views of a bigger buffer.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        from safetensors.torch import save_file
    except ImportError:
        torch.save(state, folder / STATE_DICT_FILE)
        return STATE_DICT_FILE
    save_file(state, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})
    return SAFETENSORS_FILE


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise NasError(f"{path}: reading safetensors needs the safetensors package (pip install "
                               "safetensors)") from None
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except NasError:
        raise
    except Exception as error:  # corrupt files raise format-specific errors
        raise NasError(f"{path}: unreadable weights ({first_line(error)})") from None


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace ``model`` on ``example`` and save it; the traced module must match the live one on
    ``example`` and on a batch of another size (else ``NasError``)."""
    import warnings

    plain = plain_copy(model)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-derived Python branches become constants; the check below on another batch size is the test.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(plain, example, check_trace=False)
        other = torch.cat([example, example.flip(0)])[: example.shape[0] + 1]
        for batch in (example, other):
            live = model.eval()(batch)
            got = traced(batch)
            if not torch.allclose(got, live, atol=TRACE_TOLERANCE, rtol=0):
                worst = float((got - live).abs().max())
                raise NasError(f"{path.name}: the traced model differs from the live one by {worst:.2e} "
                               f"(batch of {batch.shape[0]}); not exported")
    traced.save(str(path))


@dataclass
class OnnxResult:
    """What ``write_onnx`` produced: ``reason`` is None when the file was written; ``batch`` is None for a
    dynamic batch dimension, else the one batch size the file accepts (``dynamic_error`` says why)."""

    batch: int | None = None
    reason: str | None = None
    dynamic_error: str | None = None


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> OnnxResult:
    """Export ONNX (opset 17) with the TorchScript-based exporter and check it with onnxruntime.

    A dynamic-batch export that onnxruntime cannot run on another batch size (the spiking families
    have reshapes that the exporter freezes to the example's batch) is replaced by a fixed-batch one.
    """
    try:
        import onnxruntime
    except ImportError:
        return OnnxResult(reason="ONNX export needs the onnx and onnxruntime packages (pip install onnx onnxruntime)")
    plain = plain_copy(model)
    with torch.no_grad():
        other = torch.cat([example, example.flip(0)])[: example.shape[0] + 1]
        expected = {len(b): (b, model.eval()(b)) for b in (example, other)}
    failures: list[str] = []
    for dynamic in (True, False):
        try:
            _onnx_export(plain, example, path, dynamic)
            quiet = onnxruntime.SessionOptions()
            quiet.log_severity_level = 4  # a failed dynamic-batch run is expected and reported here
            session = onnxruntime.InferenceSession(str(path), quiet, providers=["CPUExecutionProvider"])
            for size, (batch, live) in expected.items():
                if not dynamic and size != example.shape[0]:
                    continue
                got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
                if not torch.allclose(got, live, atol=ONNX_TOLERANCE, rtol=0):
                    raise ValueError(f"onnxruntime differs from torch by {float((got - live).abs().max()):.2e}")
            if dynamic:
                return OnnxResult()
            return OnnxResult(batch=int(example.shape[0]), dynamic_error=failures[0])
        except Exception as error:  # exporters and onnxruntime raise many unrelated types; the reason matters
            path.unlink(missing_ok=True)
            text = str(error).strip().splitlines()
            failures.append(f"{type(error).__name__}: {text[0] if text else ''}"[:LINE_LIMIT])
    return OnnxResult(reason=f"ONNX export failed: {failures[-1]}", dynamic_error=failures[0])


def _onnx_export(plain: nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> None:
    import contextlib
    import io
    import warnings

    # The exporter prints the whole graph on some failures: keep the terminal to nas's own lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plain, (example,), str(path), dynamo=False, opset_version=17,
            input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
        )
