"""Export the detector's inference path to ONNX or TorchScript at a fixed input shape.

Token pruning makes EVAD's graph depend on its input shape and keep rate (SPEC section 2): the
token count after each pruning layer is ``ceil(rho * N)``. For one clip shape (B, 3, T, H, W) and
one keep rate every shape inside is static, and the data-dependent steps (top-k token selection,
gathers and scatters by token index, RoIAlign sampling) are ordinary tensor operations, so a trace
of one forward pass is the whole model. The one step whose shapes depend on the data, pooling each
box from the FPN level its size selects, pools every box on every level while traced
(`evad.ops.poolers.multi_scale_roi_align`). `ExportableEVAD` wraps the detector for the trace:
backbone, localization and classification branches and the tensor part of `PostProcess`, returning
plain tensors for every query.

The exported graph:

========================  ==================  ===================================================
name                      shape (float32)     meaning
========================  ==================  ===================================================
input ``clips``           (B, 3, T, H, W)     normalised clips, zero-padded bottom/right to H x W
input ``image_sizes``     (B, 2)              unpadded (height, width) of each clip in pixels
input ``target_sizes``    (B, 2)              (height, width) of the frames boxes are scaled to
output ``boxes``          (B, Q, 4)           xyxy in target pixels, clipped as `PostProcess` does
output ``person_scores``  (B, Q)              person probability of each query
output ``action_scores``  (B, Q, K)           sigmoid probability of each action class
========================  ==================  ===================================================

Thresholding is left to the caller; `PostProcess` keeps the queries whose person score is at least
0.7 (all of them on a keyframe where none is). Exported with ``size_inputs=False`` the graph takes
``clips`` alone, for unpadded clips whose boxes are wanted in clip pixels.

ONNX export uses torch's TorchScript-based exporter (``dynamo=False``): the dynamo-based one needs
the onnxscript package, which evad does not depend on. RoIAlign runs its pure-PyTorch path while
traced (`evad.ops.roi_align`), so the files need neither torchvision nor custom operators.

Measured on a busy 2-core CPU: the tiny preset at 64 x 96 exports in 4-16 s (2.7 MiB); ViT-B at
224 x 224 in 93 s to ONNX (698 MiB) and 47 s to TorchScript (715 MiB). ONNX files hold at most
2 GiB of weights (ViT-H does not fit; use TorchScript).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from evad.errors import UserError
from evad.fileio import check_output_file, write_atomically
from evad.layers.token_pruning import check_keep_rate
from evad.models.detector import EVAD, check_input_size
from evad.ops.boxes import rescale_boxes

FORMATS = ("onnx", "torchscript")
# The file name extensions each format is written under (any case), and the one of default names.
EXTENSIONS = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts")}
DEFAULT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAMES = ("clips", "image_sizes", "target_sizes")
OUTPUT_NAMES = ("boxes", "person_scores", "action_scores")
DEFAULT_OPSET = 17
# Checked against onnxruntime: 16-20 match PyTorch; 14-15 export but give wrong action scores.
# torch's TorchScript-based exporter stops at 20.
OPSET_RANGE = (16, 20)
ONNX_MAX_BYTES = 2**31  # protobuf's limit on one file
METADATA_KEY = "evad"  # ONNX metadata_props key / TorchScript extra file (without ".json")


class ExportableEVAD(nn.Module):
    """The detector's inference path at a fixed keep rate, returning plain tensors.

    Args:
        model: The detector; it is shared, not copied.
        keep_rate: Token keep rate rho baked into the export (default: the backbone's).
    """

    def __init__(self, model: EVAD, keep_rate: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.keep_rate = model.backbone.keep_rate if keep_rate is None else check_keep_rate(keep_rate)

    def forward(
        self, clips: Tensor, image_sizes: Tensor | None = None, target_sizes: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Boxes (B, Q, 4), person scores (B, Q) and action scores (B, Q, K) of every query.

        Args:
            clips: (B, 3, T, H, W) normalised clips, zero-padded bottom/right.
            image_sizes: (B, 2) unpadded (height, width); default (H, W).
            target_sizes: (B, 2) (height, width) the boxes are scaled to; default `image_sizes`.
        """
        outputs = self.model(clips, image_sizes, keep_rate=self.keep_rate)
        in_sizes = outputs["image_sizes"]  # (B, 2) float32
        target = in_sizes if target_sizes is None else target_sizes.to(in_sizes)
        boxes = rescale_boxes(outputs["pred_boxes"], in_sizes, target)
        person = outputs["pred_logits"].softmax(-1)[..., 0]  # (B, Q)
        actions = outputs["action_logits"].sigmoid()  # (B, Q, K)
        return boxes, person, actions


def check_img_size(model: EVAD, img_size: Sequence[int]) -> tuple[int, int]:
    """`img_size` as (height, width), or ValueError unless the detector takes it (`check_input_size`)."""
    h, w = (int(v) for v in img_size)
    check_input_size(h, w, model.backbone.patch_size)
    return h, w


def check_extension(path: str | Path, fmt: str) -> None:
    """Refuse a file name whose extension is not one of `EXTENSIONS[fmt]` (in any case).

    Args:
        path: The file to write.
        fmt: "onnx" or "torchscript".

    Raises:
        UserError: Naming the file, its extension and the ones `fmt` is written under.
        ValueError: For an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS[fmt]:
        return
    *first, last = EXTENSIONS[fmt]
    wanted = f"{fmt} files end in {', '.join(first)} or {last}" if first else f"{fmt} files end in {last}"
    others = [other for other in FORMATS if other != fmt and suffix in EXTENSIONS[other]]
    if others:
        raise UserError(f"{path}: {suffix} is the {others[0]} suffix, but the format is {fmt}; {wanted}")
    raise UserError(f"{path}: {wanted}, not {suffix}" if suffix else f"{path}: no extension; {wanted}")


def check_destination(
    path: str | Path, fmt: str, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Path:
    """Refuse, before any work, a file that an export to `fmt` cannot or should not write.

    Checks the extension (`check_extension`), that `path` is not a folder nor one of `inputs` and
    exists only with `overwrite`, and that its folder exists or can be created and can be written
    in: a temporary entry is created and removed in the nearest existing folder on the way, which
    also catches what permission bits do not tell (a read-only file system, /proc). Nothing is
    left behind.

    Args:
        path: The file to write.
        fmt: "onnx" or "torchscript".
        overwrite: Whether an existing file may be replaced.
        inputs: The files the export reads (a checkpoint ends in .pt too); never replaced.

    Returns:
        `path` as a Path.

    Raises:
        UserError: One line naming `path` and the problem.
    """
    path = Path(path)
    check_extension(path, fmt)
    check_output_file(path, overwrite, inputs, create_folders=True)
    return path


def example_inputs(
    model: EVAD, img_size: Sequence[int], batch_size: int = 1, size_inputs: bool = True
) -> tuple[Tensor, ...]:
    """Seeded random inputs of the export's shapes, on the model's device.

    Args:
        model: The detector.
        img_size: (height, width) of the clips.
        batch_size: Clips per call B.
        size_inputs: Include `image_sizes` and `target_sizes` (both (H, W) per clip).
    """
    h, w = check_img_size(model, img_size)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(batch_size, 3, model.backbone.num_frames, h, w, generator=generator).to(device)
    if not size_inputs:
        return (clips,)
    sizes = torch.tensor([[h, w]], dtype=torch.float32, device=device).repeat(batch_size, 1)  # (B, 2)
    return clips, sizes, sizes.clone()


def export_onnx(
    model: EVAD,
    path: str | Path,
    img_size: Sequence[int],
    *,
    keep_rate: float | None = None,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    size_inputs: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the inference path of `model` as an ONNX file (atomically).

    Args:
        model: The detector; it is put in eval mode.
        path: Output file.
        img_size: (height, width) of the clips the file takes.
        keep_rate: Token keep rate baked in (default: the model's).
        batch_size: Clips per call B (fixed in the file).
        opset: ONNX opset version, within `OPSET_RANGE`.
        size_inputs: Take `image_sizes` and `target_sizes` inputs (see the module docstring).
        metadata: Extra JSON-serialisable entries for the file's ``evad`` metadata.

    Returns:
        The metadata stored in the file (JSON under the ``evad`` key of ``metadata_props``).

    Raises:
        ValueError: For a bad size, keep rate, batch size or opset.
        UserError: If the onnx package is not installed, or `path` cannot be written (checked
            before the export): a folder, a missing or read-only folder.
    """
    onnx = _require("onnx")
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"opset must be in [{OPSET_RANGE[0]}, {OPSET_RANGE[1]}], got {opset}")
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if weight_bytes >= ONNX_MAX_BYTES:
        raise ValueError(
            f"the model's {weight_bytes / 2**30:.1f} GiB of weights exceed the 2 GiB an ONNX file holds; "
            "export to TorchScript instead"
        )
    module, inputs = _prepare(model, img_size, keep_rate, batch_size, size_inputs)
    _check_folder(path)
    info = _metadata(module, inputs, "onnx", metadata) | {"opset": opset}

    def write(tmp: str) -> None:
        # The fused nn.MultiheadAttention kernel (localization head) has no ONNX form.
        with _quiet_no_grad(), _mha_fastpath(False):
            torch.onnx.export(
                module,
                inputs,
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=list(INPUT_NAMES[: len(inputs)]),
                output_names=list(OUTPUT_NAMES),
            )
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(info)
        onnx.save(proto, tmp)

    write_atomically(path, write)
    return info


def export_torchscript(
    model: EVAD,
    path: str | Path,
    img_size: Sequence[int],
    *,
    keep_rate: float | None = None,
    batch_size: int = 1,
    size_inputs: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the inference path of `model` as a traced TorchScript module (atomically).

    Load it with ``torch.jit.load(path)``; the metadata is the extra file ``evad.json``.
    Arguments are those of `export_onnx`, without the opset.

    Returns:
        The metadata stored in the file.

    Raises:
        ValueError: For a bad size, keep rate or batch size.
        UserError: If `path` cannot be written (checked before the trace).
    """
    module, inputs = _prepare(model, img_size, keep_rate, batch_size, size_inputs)
    _check_folder(path)
    info = _metadata(module, inputs, "torchscript", metadata)
    extra = {f"{METADATA_KEY}.json": json.dumps(info)}
    # Saved without requires_grad, so that the loaded module's outputs are plain tensors
    # (`.numpy()` works) whether or not the caller turns gradients off.
    trainable = [p for p in module.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with _quiet_no_grad():
            traced = torch.jit.trace(module, inputs, check_trace=False)
            write_atomically(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return info


def run_exported(path: str | Path, fmt: str, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Run an exported file on `inputs` (onnxruntime on the CPU, or `torch.jit.load`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "torchscript":
        with _quiet_no_grad():
            return tuple(torch.jit.load(str(path), map_location="cpu")(*[x.cpu() for x in inputs]))
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: x.detach().cpu().numpy() for name, x in zip(INPUT_NAMES, inputs, strict=False)}
    return tuple(torch.from_numpy(y) for y in session.run(list(OUTPUT_NAMES), feed))


def _check_folder(path: str | Path) -> None:
    """Before the trace: `path` is no folder, and its folder exists and can be written in."""
    check_output_file(path, overwrite=True)


def _prepare(
    model: EVAD, img_size: Sequence[int], keep_rate: float | None, batch_size: int, size_inputs: bool
) -> tuple[ExportableEVAD, tuple[Tensor, ...]]:
    module = ExportableEVAD(model, keep_rate).eval()
    return module, example_inputs(model, img_size, batch_size, size_inputs)


def _metadata(
    module: ExportableEVAD, inputs: tuple[Tensor, ...], fmt: str, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    shapes = {name: list(x.shape) for name, x in zip(INPUT_NAMES, inputs, strict=False)}
    localization = module.model.localization
    return {
        "format": fmt,
        "keep_rate": module.keep_rate,
        "inputs": shapes,
        "outputs": list(OUTPUT_NAMES),
        "num_queries": localization.num_queries,
        **dict(extra or {}),
    }


def _require(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(
            f"this needs the {name} package: pip install onnx onnxruntime (or the evad[dev] extras)"
        ) from None


@contextlib.contextmanager
def _quiet_no_grad() -> Iterator[None]:
    """No autograd, and no warnings about Python values frozen by a trace: they are on purpose."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torch.jit and the TorchScript-based ONNX exporter are deprecated in torch 2.9+, not gone.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


@contextlib.contextmanager
def _mha_fastpath(enabled: bool) -> Iterator[None]:
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
