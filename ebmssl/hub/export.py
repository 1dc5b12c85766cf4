"""A run's backbone as a folder a model hub takes unchanged: weights, ``config.json``, model card, plots.

``export_run(run_dir, out_dir)`` rebuilds the run's backbone from its ``config.yaml`` and its exported
``backbone.safetensors``, then writes, into a temporary folder renamed to ``out_dir`` only when complete:

* ``model.safetensors``: the weights under the keys their own library loads: timm's (``timm.create_model(
  architecture, num_classes=0, **model_args)`` loads them strictly), torchvision's (a ``torchvision.models.
  resnet50()`` loads them with ``strict=False``, missing only ``fc``), transformers' (``AutoModel.
  from_pretrained(folder)``) or, for ebmssl's own small networks, ebmssl's (``build_backbone(spec)``);
* ``config.json``: how to build the network: ``library``, ``architecture``, its keyword arguments,
  ``in_chans`` and ``num_features`` (for timm in timm's own hub format, so ``timm.create_model(
  "local-dir:FOLDER", pretrained=True)`` or ``"hf-hub:owner/name"`` builds it; for transformers, the
  model's own configuration with these keys added);
* ``README.md``: the model card (:mod:`ebmssl.hub.card`), ``plots/`` (copied from the run) and
  ``training_config.yaml`` (the resolved run config).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmssl.registry import ConfigError

WEIGHTS = "model.safetensors"


def backbone_spec(config: dict[str, Any]) -> dict[str, Any]:
    spec = (config.get("model") or {}).get("backbone")
    if spec is None:
        raise ConfigError("config.yaml: the run's model has no `backbone:`; nothing to export.")
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def channel_candidates(config: dict[str, Any]) -> list[int]:
    """The input channels the backbone may have been built for: the view pipeline's (built from the dataset's
    stated info, no file read) first, then 3 and 1; the weights decide among them."""
    data = config.get("data") or {}
    stated = []
    try:
        from ebmssl.data import build_views, dataset_info

        stated.append(int(build_views(data["views"], dataset_info(data["dataset"], train=True)).channels))
    except Exception:  # a dataset that cannot describe itself without its files: let the weights tell
        pass
    return list(dict.fromkeys([*stated, 3, 1]))


def load_run_backbone(run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained backbone of ``run_dir`` (built as training built it, with its exported weights) and the config.

    The input channel count is the one whose network the weights fit (the views' channels are not in the
    config when the dataset decides them).
    """
    from safetensors.torch import load_file

    from ebmssl.config import load_config
    from ebmssl.models import build_model_backbone

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; pass the directory tools/train.py wrote.")
    weights = run_dir / "backbone.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{run_dir}: no backbone.safetensors; the run has not finished. Train (or resume) it first.")
    config = load_config(run_dir / "config.yaml")
    state = load_file(str(weights))
    errors = []
    for channels in channel_candidates(config):
        backbone = build_model_backbone(config.get("model"), channels, where=f"{run_dir / 'config.yaml'}: model")
        try:
            missing, unexpected = backbone.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatch: another channel count
            errors.append(f"{channels} channels: {str(error).splitlines()[1] if len(str(error).splitlines()) > 1 else error}")
            continue
        if not unexpected and all(k.startswith("fc.") for k in missing):
            return backbone.eval(), config
        errors.append(f"{channels} channels: missing {missing[:3]}, unexpected {unexpected[:3]}")
    raise ConfigError(
        f"{weights}: the weights do not fit the backbone of {run_dir / 'config.yaml'} ({'; '.join(errors)}). "
        f"Was the config edited after training?"
    )


def preprocessing(config: dict[str, Any], channels: int) -> dict[str, Any]:
    """How training fed the encoder at evaluation: resize to the global view size, [0, 1], then per-channel
    ``(x - mean) / std``. ``mean``/``std`` are given where the config fixes them (the views' own, or the
    statistics the dataset states from its spec); a dataset whose statistics are computed from its images
    leaves them out (the card says so)."""
    data = config.get("data") or {}
    views = data.get("views") or {}
    size = views.get("global_size") or views.get("image_size") if isinstance(views, dict) else None
    found: dict[str, Any] = {"input_size": [channels, int(size), int(size)]} if size else {}
    if isinstance(views, dict) and views.get("mean") and views.get("std"):
        return {**found, "mean": list(views["mean"]), "std": list(views["std"])}
    try:  # the dataset's info stated from its spec (data.dataset_info, where the code base offers it)
        from ebmssl.data import dataset_info
        from ebmssl.data.dataset import PLACEHOLDER_MEAN, PLACEHOLDER_STD

        info = dataset_info(data.get("dataset"), train=True)
    except Exception:  # an older code base, or a dataset that cannot describe itself here: no statistics
        return found
    mean, std = list(info.mean), list(info.std)
    if mean == [PLACEHOLDER_MEAN] * len(mean) and std == [PLACEHOLDER_STD] * len(std):
        return found  # computed from the images at load time: not known from the config
    if len(mean) != channels:  # to_rgb replicates a grayscale channel (and its statistics)
        mean, std = mean * channels, std * channels
    return {**found, "mean": mean, "std": std}


TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")


def describe(backbone: nn.Module, spec: dict[str, Any]) -> dict[str, Any]:
    """config.json's description: library, architecture, keyword arguments, in_chans, num_features."""
    if callable(getattr(backbone, "library_config", None)):
        return backbone.library_config()
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "in_channels")}
    channels = int(getattr(backbone, "in_channels", 3))
    if spec["name"] in TORCHVISION_RESNETS:
        changes = []
        if kwargs.get("small_images"):
            changes.append("conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False); maxpool = nn.Identity()")
        elif channels != 3:
            changes.append("conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)")
        changes.append("fc = nn.Identity()")
        return {
            "library": "torchvision", "architecture": spec["name"], "kwargs": {}, "in_chans": channels,
            "num_features": int(backbone.output_dim), "modifications": changes,
        }  # fmt: skip
    return {
        "library": "ebmssl", "architecture": spec["name"], "kwargs": kwargs, "in_chans": channels,
        "num_features": int(backbone.output_dim),
    }  # fmt: skip


def library_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    if callable(getattr(backbone, "library_state_dict", None)):
        return backbone.library_state_dict()
    from ebmssl.models import export_torchvision_state_dict

    return export_torchvision_state_dict(backbone)


def write_weights(backbone: nn.Module, description: dict[str, Any], folder: Path) -> None:
    """model.safetensors and config.json in ``folder``, in the format of the backbone's library."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in library_state_dict(backbone).items()}
    library = description["library"]
    if library == "transformers":
        backbone.model.save_pretrained(str(folder), safe_serialization=True)
        config = json.loads((folder / "config.json").read_text())
        config.update({k: v for k, v in description.items() if k not in config})
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        return
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "library": library})
    if library == "timm":
        from timm.models._hub import save_config_for_hf  # timm's hub config writer (also used by its push_to_hf_hub)

        extra = {"library": "timm", "in_chans": description["in_chans"]}
        data_config = {"crop_pct": 1.0, **{k: v for k, v in description.get("preprocessing", {}).items()}}
        try:  # timm's own preprocessing fields (resolve_data_config reads them) from the run's
            save_config_for_hf(backbone.model, str(folder / "config.json"), model_config=extra,
                               model_args=description["model_args"], data_config=data_config)
        except ValueError:  # a size the model cannot take as a recommendation: timm's defaults
            save_config_for_hf(backbone.model, str(folder / "config.json"), model_config=extra,
                               model_args=description["model_args"])
        config = json.loads((folder / "config.json").read_text())
        config["preprocessing"] = description.get("preprocessing", {})
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        return
    (folder / "config.json").write_text(json.dumps(description, indent=2))


def publish_permissions(folder: Path) -> None:
    """The modes a plain mkdir / open would give (mkdtemp makes the staging folder private to its owner)."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def export_run(run_dir: Path, out_dir: Path, license_id: str = "apache-2.0", repo_id: str | None = None) -> Path:
    """Write the hub-ready folder of ``run_dir`` to ``out_dir`` (which must not exist); returns ``out_dir``.

    Everything is written into a temporary sibling folder first and renamed at the end, so an error
    leaves no partial ``out_dir``.
    """
    from ebmssl.hub.card import model_card

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; give a new folder (the export never overwrites one).")
    backbone, config = load_run_backbone(run_dir)
    description = describe(backbone, backbone_spec(config))
    description["preprocessing"] = preprocessing(config, int(description["in_chans"]))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_weights(backbone, description, staging)
        plots = []
        if (run_dir / "plots").is_dir():
            shutil.copytree(run_dir / "plots", staging / "plots")
            plots = sorted(p.relative_to(staging).as_posix() for p in (staging / "plots").glob("*.png"))
        shutil.copyfile(run_dir / "config.yaml", staging / "training_config.yaml")
        report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").is_file() else {}
        card = model_card(config, report, description, plots, license_id=license_id, repo_id=repo_id)
        (staging / "README.md").write_text(card)
        publish_permissions(staging)
        staging.replace(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
