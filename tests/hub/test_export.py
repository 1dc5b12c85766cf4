"""tools/export.py: the hub-ready folder loads into a fresh timm / torchvision / transformers model with the
trained encoder's features; the model card comes from the run; the upload fails cleanly without a network."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
import yaml
from torch import nn

from ebmssl.hub import HubUploadError, export_run, load_run_backbone, push_folder
from ebmssl.hub import export as export_module
from ebmssl.models import build_model_backbone
from ebmssl.registry import ConfigError
from ebmssl.training.report import export_backbone, write_report
from ebmssl.training.run import run_training
from ebmssl.training.rundir import save_resolved_config
from tests.training.test_methods_end_to_end import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

TIMM_BACKBONE = {"name": "timm", "model": "test_resnet"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (SimCLR, a timm ResNet, 2 steps) with its final evaluation against both baselines."""
    config = tiny_run_config("simclr")
    config["model"]["backbone"] = dict(TIMM_BACKBONE)
    config["train"]["max_steps"] = 2
    config["eval"].update({"baselines": True, "linear_epochs": 2, "plots": True})  # the card shows the plots
    run_dir = tmp_path_factory.mktemp("runs") / "simclr_timm"
    run_training(config, run_dir)
    return run_dir


def hand_made_run(run_dir: Path, backbone_spec: dict, channels: int = 3, views: dict | None = None) -> nn.Module:
    """A run directory as run_training leaves it (config.yaml, backbone.safetensors), for a given backbone."""
    config = tiny_run_config("byol")
    config["model"]["backbone"] = backbone_spec
    config["data"]["views"].update(views or {})
    run_dir.mkdir(parents=True)
    save_resolved_config(config, run_dir)
    torch.manual_seed(3)
    backbone = build_model_backbone(config["model"], channels).eval()
    export_backbone(backbone, run_dir / "backbone.safetensors")
    return backbone


@pytest.mark.slow  # shares one real training run (with its final evaluation) as a fixture
def test_timm_export_loads_back_into_timm_with_the_same_features(trained_run: Path, tmp_path: Path) -> None:
    out = export_run(trained_run, tmp_path / "hub")
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "README.md", "plots", "training_config.yaml"}
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["library"] == "timm" and config["num_classes"] == 0
    assert config["in_chans"] == 3 and config["num_features"] == 96
    encoder, _ = load_run_backbone(trained_run)
    fresh = timm.create_model(f"local-dir:{out}", pretrained=True).eval()  # timm's own loader, strict keys
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(fresh(x), encoder(x))
    # and the plain way: the architecture by name, the safetensors file into it
    from safetensors.torch import load_file

    plain = timm.create_model("test_resnet", num_classes=0)
    plain.load_state_dict(load_file(str(out / "model.safetensors")))
    torch.testing.assert_close(plain.eval()(x), encoder(x))
    # and back into ebmssl as a backbone, e.g. to continue training from it
    from ebmssl.models import build_backbone

    again = build_backbone({"name": "timm", "model": f"local-dir:{out}"}).eval()
    assert again.model_name == "test_resnet"
    torch.testing.assert_close(again(x), encoder(x))


@pytest.mark.slow  # shares one real training run (with its final evaluation) as a fixture
def test_model_card_is_written_from_the_run(trained_run: Path, tmp_path: Path) -> None:
    out = export_run(trained_run, tmp_path / "hub", license_id="mit", repo_id="someone/simclr-timm")
    card = (out / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "timm" and meta["license"] == "mit" and "simclr" in meta["tags"]
    report = json.loads((trained_run / "report.json").read_text())
    for name in ("trained", "random_init", "raw_pixels"):
        knn = f"{100 * report['evaluation'][name]['knn_accuracy']:.1f} %"
        assert knn in body, f"{name}'s kNN accuracy {knn} is missing from the card"
    assert "| random init (same architecture) |" in body and "| raw pixels |" in body
    assert f"steps: {report['training']['steps']}" in body and "energy `cosine` + `infonce`" in body
    assert 'timm.create_model("hf-hub:someone/simclr-timm", pretrained=True)' in body
    plots = sorted(p.name for p in (trained_run / "plots").glob("*.png"))
    assert plots and all(f"(plots/{name})" in body and (out / "plots" / name).is_file() for name in plots)
    assert "`mit` license" in body and "| diagnostic | value |" in body
    numeric = [k for k, v in report["diagnostics"].items() if isinstance(v, float)]
    assert numeric and all(f"| {key} |" in body for key in numeric)


def test_torchvision_export_loads_into_torchvision(tmp_path: Path) -> None:
    trained = hand_made_run(tmp_path / "run", {"name": "resnet18"})
    out = export_run(tmp_path / "run", tmp_path / "hub")
    config = json.loads((out / "config.json").read_text())
    assert config == {"library": "torchvision", "architecture": "resnet18", "kwargs": {}, "in_chans": 3,
                      "num_features": 512, "modifications": ["fc = nn.Identity()"],
                      "preprocessing": {"input_size": [3, 16, 16]}}  # synthetic data: statistics computed from images
    from safetensors.torch import load_file

    fresh = torchvision.models.resnet18()
    result = fresh.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    fresh.fc = nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(fresh.eval()(x), trained(x))
    assert "model = torchvision.models.resnet18()" in (out / "README.md").read_text()


def test_transformers_export_loads_with_automodel(tmp_path: Path) -> None:
    import transformers

    vit = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 64, "image_size": 16, "patch_size": 4}
    trained = hand_made_run(tmp_path / "run", {"name": "hf", "config": vit}, channels=1)
    out = export_run(tmp_path / "run", tmp_path / "hub")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["library"] == "transformers" and config["in_chans"] == 1
    fresh = transformers.AutoModel.from_pretrained(str(out)).eval()
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(fresh(pixel_values=x).last_hidden_state[:, 0], trained(x))


def test_timm_config_carries_the_runs_preprocessing(tmp_path: Path) -> None:
    """timm's resolve_data_config on the exported model gives the run's normalisation and view size."""
    stats = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    hand_made_run(tmp_path / "run", dict(TIMM_BACKBONE), views=stats)
    out = export_run(tmp_path / "run", tmp_path / "hub")
    assert json.loads((out / "config.json").read_text())["preprocessing"] == {"input_size": [3, 16, 16], **stats}
    data = timm.data.resolve_data_config(model=timm.create_model(f"local-dir:{out}", pretrained=True))
    assert tuple(data["mean"]) == (0.1, 0.2, 0.3) and tuple(data["std"]) == (0.4, 0.5, 0.6)
    assert tuple(data["input_size"]) == (3, 16, 16)
    assert "with mean [0.1, 0.2, 0.3] and std [0.4, 0.5, 0.6]" in (out / "README.md").read_text()


def test_bad_runs_and_outputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.yaml"):
        export_run(tmp_path, tmp_path / "out")
    hand_made_run(tmp_path / "run", {"name": "small_cnn", "width": 4})
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export_run(tmp_path / "run", tmp_path / "taken")
    (tmp_path / "run" / "backbone.safetensors").unlink()
    with pytest.raises(ConfigError, match="no backbone.safetensors"):
        export_run(tmp_path / "run", tmp_path / "out")


def test_a_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hand_made_run(tmp_path / "run", {"name": "small_cnn", "width": 4})
    (tmp_path / "exports").mkdir()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "write_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        export_run(tmp_path / "run", tmp_path / "exports" / "hub")
    assert list((tmp_path / "exports").iterdir()) == []  # neither the folder nor its staging copy


@pytest.mark.slow  # shares one real training run (with its final evaluation) as a fixture
def test_push_to_an_unreachable_hub_names_the_network(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    import export as export_tool  # tools/export.py

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "hub"
    code = export_tool.main([str(trained_run), str(out), "--push-to-hub", "someone/simclr-timm"])
    assert code == 5
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()  # the folder is complete
    with pytest.raises(HubUploadError, match=r"cannot reach the Hugging Face Hub at http://127.0.0.1:9 over the network"
                                             r".*connect this machine.*hf upload someone/simclr-timm"):
        push_folder(out, "someone/simclr-timm", endpoint="http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUploadError, match="HF_HUB_OFFLINE is set"):
        push_folder(out, "someone/simclr-timm")


def test_push_without_the_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ConfigError, match=r'optional extra `hf`.*pip install "ebmssl\[hf\]"'):
        push_folder(tmp_path, "someone/model")
