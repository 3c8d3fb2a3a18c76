"""Bundle conformance: metadata.json carries the fields MONAI's bundle specification requires (its JSON schema is
fetched from the internet by `verify_metadata`, so the required fields are checked here), and every config parses."""

from __future__ import annotations

import json

import pytest

from conftest import REPO

CONFIGS = REPO / "bundle" / "configs"


def test_metadata_required_fields():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    for io_key, name in (("inputs", "image"), ("outputs", "pred")):
        spec = meta["network_data_format"][io_key][name]
        for key in ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data"):
            assert key in spec, f"{io_key}.{name}.{key}"
    import monai
    import numpy
    import torch

    assert meta["monai_version"] == monai.__version__
    assert meta["numpy_version"] == numpy.__version__
    assert torch.__version__.startswith(meta["pytorch_version"])


@pytest.mark.parametrize("extra", [[], ["relearn.yaml"], ["evaluate.yaml"], ["inference.yaml"],
                                   ["multi_gpu_train.yaml"]])
def test_configs_parse(extra):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml")] + [str(CONFIGS / e) for e in extra])
    parser.parse()
    assert "network_def" in parser


@pytest.mark.slow
def test_ckpt_export_torchscript_matches_eager(tmp_path, echo_small):
    import subprocess
    import sys

    import torch

    from medvos.networks.image_model import FewShotSegNet, pack_episode

    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "m.ts"),
           "--ckpt_file", str(tmp_path / "model.pt"), "--meta_file", str(CONFIGS / "metadata.json"),
           "--config_file", str(CONFIGS / "train.yaml"), "--backbone_weights", "None", "--use_trace", "True",
           "--input_shape", "[1, 7, 128, 128]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ts = torch.jit.load(str(tmp_path / "m.ts"))
    frames = torch.nn.functional.interpolate(torch.from_numpy(echo_small.frames).float().repeat(1, 3, 1, 1) / 255,
                                             size=(128, 128), mode="bilinear")
    mask = torch.nn.functional.interpolate(torch.from_numpy(echo_small.labels[:1, None]).float(), size=(128, 128))
    for t in range(1, frames.shape[0]):
        x = pack_episode(frames[t : t + 1], frames[None, :1], mask[None])
        with torch.no_grad():
            eager, exported = net(x), ts(x)
        torch.testing.assert_close(exported, eager, rtol=1e-4, atol=1e-4)
        assert torch.equal(exported.argmax(1), eager.argmax(1))
