"""Model sources: torchvision by name, user files, meta construction, default inputs, clear errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from torchbudget.engine.errors import ModelLoadError, UnknownModelError
from torchbudget.engine.sources import list_model_names, load_model

FUSIONNET = Path(__file__).parent / "models" / "fusionnet.py"


def _all_on_meta(module: nn.Module) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return bool(tensors) and all(t.device.type == "meta" for t in tensors)


def _meta_forward(loaded) -> object:
    """Run the loaded (meta) model on meta tensors of its default inputs: proves the inputs fit."""
    args = [torch.empty(spec.shape, dtype=spec.torch_dtype, device="meta") for spec in loaded.default_inputs]
    with torch.no_grad():
        return loaded.module.eval()(*args)


def test_list_model_names_covers_every_torchvision_family():
    names = list_model_names()
    assert names == sorted(tvm.list_models())
    for expected in ("resnet50", "deeplabv3_resnet50", "fasterrcnn_resnet50_fpn", "r3d_18", "raft_small",
                     "quantized_resnet18"):
        assert expected in names


@pytest.mark.parametrize("name", ["resnet50", "regnet_y_400mf", "vit_b_16", "alexnet"])
def test_torchvision_params_on_meta_and_counted_like_torchvision(name):
    loaded = load_model(name)
    assert _all_on_meta(loaded.module)
    assert loaded.family == "classification" and loaded.name == name
    assert loaded.build_kwargs["weights"] is None
    expected = tvm.get_model_weights(name).DEFAULT.meta["num_params"]  # torchvision's own (local) metadata
    assert sum(p.numel() for p in loaded.module.parameters()) == expected


def test_construction_leaves_module_class_unpatched():
    original = (nn.Module.register_parameter, nn.Module.register_buffer)
    load_model("resnet18")
    with pytest.raises(ModelLoadError):
        load_model("resnet18", {"no_such_kwarg": 1})
    assert (nn.Module.register_parameter, nn.Module.register_buffer) == original
    assert nn.Linear(2, 2).weight.device.type == "cpu"


@pytest.mark.parametrize("name, family, shapes", [
    ("resnet18", "classification", [(1, 3, 224, 224)]),
    ("inception_v3", "classification", [(1, 3, 299, 299)]),      # weights' crop size
    ("efficientnet_b3", "classification", [(1, 3, 300, 300)]),
    ("vit_h_14", "classification", [(1, 3, 224, 224)]),          # built without weights: image_size 224
    ("swin_v2_t", "classification", [(1, 3, 256, 256)]),
    ("lraspp_mobilenet_v3_large", "segmentation", [(1, 3, 520, 520)]),
    ("r3d_18", "video", [(1, 3, 16, 112, 112)]),
    ("mvit_v2_s", "video", [(1, 3, 16, 224, 224)]),
    ("raft_small", "optical_flow", [(1, 3, 360, 640), (1, 3, 360, 640)]),
    ("quantized_mobilenet_v2", "quantization", [(1, 3, 224, 224)]),
])
def test_default_inputs_fit_the_model(name, family, shapes):
    loaded = load_model(name)
    assert loaded.family == family
    assert [spec.shape for spec in loaded.default_inputs] == shapes
    _meta_forward(loaded)  # raises if the default input does not fit the model


def test_segmentation_and_detection_never_download_backbones():
    for name in ("fcn_resnet50", "fasterrcnn_mobilenet_v3_large_320_fpn"):
        loaded = load_model(name)
        assert loaded.build_kwargs["weights"] is None and loaded.build_kwargs["weights_backbone"] is None
        assert _all_on_meta(loaded.module)
    assert load_model("ssdlite320_mobilenet_v3_large").family == "detection"


def test_model_kwargs_reach_the_builder():
    loaded = load_model("resnet18", {"num_classes": 10})
    assert loaded.module.fc.out_features == 10
    assert _meta_forward(loaded).shape == (1, 10)


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError) as info:
        load_model("resnet5")
    message = str(info.value)
    assert "resnet5" in message and "resnet50" in message
    assert info.value.field == "model"


def test_user_file_class_with_kwargs():
    loaded = load_model(f"{FUSIONNET}:FusionNet", {"input_nc": 1, "output_nc": 1, "ngf": 32})
    assert loaded.family == "file" and loaded.name == "FusionNet"
    assert _all_on_meta(loaded.module)
    assert sum(p.numel() for p in loaded.module.down_1.parameters()) == 37632  # the seed's hand count
    assert loaded.default_inputs[0].shape == (1, 1, 224, 224)  # guessed from the first conv's in_channels


def _write(tmp_path: Path, source: str, name: str = "user_model.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_user_file_factory_and_declared_inputs(tmp_path):
    path = _write(tmp_path, """
        import torch.nn as nn
        EXAMPLE_INPUTS = "2x16"
        def make(width=8):
            return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4))
    """)
    loaded = load_model(f"{path}:make", {"width": 32})
    assert loaded.module[0].out_features == 32
    assert [s.shape for s in loaded.default_inputs] == [(2, 16)]


def test_user_file_single_class_needs_no_name(tmp_path):
    path = _write(tmp_path, """
        import torch.nn as nn
        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 2)
            def forward(self, x):
                return self.fc(x)
    """)
    assert load_model(str(path)).name == "Tiny"


@pytest.mark.parametrize("source, spec_suffix, expected", [
    ("import torch.nn as nn\nx = (\n", ":Net", ["user_model.py:2", "SyntaxError"]),
    ("import torch.nn as nn\n\nimport not_a_module_xyz\n", ":Net", ["user_model.py:3", "ModuleNotFoundError"]),
    ("import torch.nn as nn\nclass Net(nn.Module):\n    pass\n", ":Missing", ["no attribute 'Missing'", "Net"]),
    ("import torch.nn as nn\ndef make():\n    return 3\n", ":make", ["returned a int", "nn.Module"]),
    ("import torch.nn as nn\ndef make():\n    x = 1\n    raise ValueError('bad width')\n", ":make",
     ["user_model.py:4", "ValueError: bad width"]),
])
def test_user_file_errors_are_short_and_located(tmp_path, source, spec_suffix, expected):
    path = _write(tmp_path, source)
    with pytest.raises(ModelLoadError) as info:
        load_model(f"{path}{spec_suffix}")
    message = str(info.value)
    for fragment in expected:
        assert fragment in message
    assert "Traceback" not in message and "\n" not in message


def test_missing_file_and_bad_kwargs(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"{tmp_path}/nope.py:Net")
    with pytest.raises(ModelLoadError, match="TypeError"):
        load_model(f"{FUSIONNET}:FusionNet", {"colour": "red"})


def test_initialisers_skip_meta_tensors_only_during_construction():
    """nn.init is bypassed for meta tensors while building (nothing to fill) and restored afterwards."""
    from torchbudget.engine.meta_init import empty_weights

    original = nn.init.kaiming_uniform_
    with empty_weights():
        assert nn.init.kaiming_uniform_ is not original
        real = torch.zeros(4, 4)
        nn.init.constant_(real, 3.0)  # real tensors are still initialised
        assert torch.equal(real, torch.full((4, 4), 3.0))
        layer = nn.Linear(4, 4)
        assert layer.weight.device.type == "meta"
    assert nn.init.kaiming_uniform_ is original


def test_building_on_meta_in_one_thread_leaves_other_threads_real():
    """The GUI builds on meta in worker threads; a real model built meanwhile elsewhere stays real,
    and overlapping builds leave nn.Module's methods as they were."""
    import threading

    from torch import nn

    from torchbudget.engine.meta_init import empty_weights

    original = nn.Module.register_parameter
    inside, release = threading.Event(), threading.Event()

    def worker():
        with empty_weights():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    try:
        with empty_weights():
            meta_layer = nn.Linear(3, 4)
        real_layer = nn.Linear(3, 4)  # this thread left its block; the worker is still inside its own
    finally:
        release.set()
        thread.join()
    assert meta_layer.weight.device.type == "meta"
    assert real_layer.weight.device.type == "cpu"
    assert nn.Module.register_parameter is original
