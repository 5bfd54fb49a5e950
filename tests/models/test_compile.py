"""torch.compile captures the whole detector as one graph, in both modes, with eager's values.

A graph break costs a compiled model a return to Python and splits the work the compiler can fuse.
Each of these once broke the graph: the position-table cache (its key reads a tensor's version
counter), the method switches (a context variable), the torchvision probe (a cache wrapper that
Dynamo traces through) and the pure-PyTorch RoIAlign's loop over images. The compile uses the
"eager" backend: Dynamo's capture is what is tested, without the time a code generator takes.
"""

import subprocess
import sys
import threading

import pytest
import torch

import evad
from evad.ops import roi_align, torchvision_available
from evad.ops.roi_align import pure_pytorch_method
from evad.switches import MethodSwitch


def _clips():
    torch.manual_seed(0)
    return torch.randn(2, 3, 16, 64, 96)


@pytest.mark.parametrize("training", [False, True])
def test_detector_is_one_graph_with_eager_values(training):
    torchvision_available()  # the probe runs once per process, outside any graph
    model = evad.create_model("tiny", num_classes=5).train(training)
    clips = _clips()
    image_sizes = torch.tensor([[64, 96], [48, 80]])
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # raises at a graph break
    with torch.set_grad_enabled(training):
        torch.manual_seed(1)
        out = compiled(clips, image_sizes=image_sizes, keep_rate=0.7)
        torch.manual_seed(1)
        with pure_pytorch_method("gather"):  # the RoIAlign road a graph takes (same values to rounding)
            expected = model(clips, image_sizes=image_sizes, keep_rate=0.7)
    for key in ("pred_logits", "pred_boxes", "action_logits", "kept_indices"):
        torch.testing.assert_close(out[key], expected[key], msg=key)
    if training:
        out["action_logits"].sum().backward()
        assert model.backbone.patch_embed.proj.weight.grad is not None


def test_compiled_roi_align_reads_the_torchvision_probe_as_a_constant():
    torchvision_available()
    input = torch.randn(2, 3, 8, 10)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.5, 9.0, 7.0]])
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: roi_align(x, rois, 3, 0.5, 2, True), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(input), roi_align(input, rois, 3, 0.5, 2, True))


def test_a_pinned_method_is_seen_only_in_its_own_context():
    switch = MethodSwitch("test_switch", ("a", "b"))
    seen = {}

    def other_thread():
        seen["other"] = switch.get()

    assert switch.get() is None
    with switch.force("b"):
        assert switch.get() == "b"
        with switch.force("a"):
            assert switch.get() == "a"
        assert switch.get() == "b"
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen["other"] is None
    assert switch.get() is None
    with pytest.raises(ValueError, match="'a' or 'b'"), switch.force("c"):
        pass
    assert switch.get() is None


def test_a_pin_still_holds_inside_a_compiled_function():
    switch = MethodSwitch("test_compiled_switch", ("a", "b"))
    x = torch.ones(3)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: x * 2 if switch.get() == "b" else x, backend="eager")
    assert compiled(x).tolist() == [1, 1, 1]
    with switch.force("b"):
        assert compiled(x).tolist() == [2, 2, 2]
    assert compiled(x).tolist() == [1, 1, 1]


_EAGER_THEN_COMPILED = """
import sys
import torch
import evad
from evad.ops import fastpath, nms, roi_align
input = torch.randn(2, 3, 8, 10)
rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.5, 9.0, 7.0]])
expected = roi_align(input, rois, 3, 0.5, 2, True)
nms(torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]]), torch.tensor([0.9, 0.8]), 0.5)
assert "torch._dynamo" not in sys.modules, "eager use imported Dynamo"
fastpath._tv_ops = fastpath._UNPROBED  # the probe's first run is inside the capture
compiled = torch.compile(lambda x: roi_align(x, rois, 3, 0.5, 2, True), backend="eager")
torch.testing.assert_close(compiled(input), expected)
assert fastpath._tv_ops is not fastpath._UNPROBED
"""


def test_eager_use_leaves_dynamo_unimported_and_a_capture_still_runs_the_probe_eagerly():
    # Importing Dynamo is about half of what `import evad` took (2-3 s of every CLI command).
    done = subprocess.run(
        [sys.executable, "-c", _EAGER_THEN_COMPILED], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
