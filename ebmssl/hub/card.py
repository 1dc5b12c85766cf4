"""The model card (README.md with hub metadata front matter) of an exported run, written from the run itself.

Sections: what the model is (method as energy + strategies + architecture, backbone), how to load it
(for its library), the data and views, training (steps, images seen, time), the evaluation table (kNN,
linear and few-label accuracy of the trained encoder against a random-init encoder and raw pixels, from
``report.json``), the final diagnostics and any collapse verdict, the plots, the resolved config, and a
license line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ebmssl.config import dump_config

# ebmssl dataset names -> Hugging Face dataset ids (the card's `datasets:` metadata links them)
HUB_DATASETS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist", "mnist": "ylecun/mnist", "cifar10": "uoft-cs/cifar10",
    "cifar100": "uoft-cs/cifar100", "stl10": "tanganke/stl10",
}  # fmt: skip
LIBRARY_NAMES = {"timm": "timm", "transformers": "transformers", "torchvision": "pytorch", "ebmssl": "pytorch"}
METRICS = (("knn_accuracy", "kNN"), ("linear_accuracy", "linear probe"), ("few_label_accuracy", "few-label probe"))


def method_name(config: Mapping[str, Any], report: Mapping[str, Any] | None = None) -> str:
    """The config the run was started from (report.json's ``config``; the saved config.yaml's own name otherwise)."""
    source = str((report or {}).get("config") or config.get("_source") or "run")
    return Path(source).stem


def method_summary(config: Mapping[str, Any]) -> str:
    """``energy + strategy (weight) ... + architecture`` as the config composes it."""
    objective = config.get("objective") or {}
    energy = (objective.get("energy") or {}).get("name", "?") if isinstance(objective.get("energy"), Mapping) else objective.get("energy", "?")
    parts = [f"energy `{energy}`"]
    for strategy in objective.get("strategies") or []:
        name = strategy.get("name") if isinstance(strategy, Mapping) else (strategy[0] if isinstance(strategy, list) else strategy)
        parts.append(f"`{name}`")
    architecture = (config.get("model") or {}).get("architecture", "joint_embedding")
    return " + ".join(parts) + f", architecture `{architecture}`"


def load_snippet(description: Mapping[str, Any], repo_id: str | None) -> str:
    where = repo_id or "path/to/this/folder"
    library = description["library"]
    if library == "timm":
        source = f"hf-hub:{repo_id}" if repo_id else "local-dir:path/to/this/folder"
        return (f'import timm\n\nmodel = timm.create_model("{source}", pretrained=True)  # pre-logits features '
                f'(num_classes=0)\nfeatures = model(images)  # (N, {description["num_features"]})')
    if library == "transformers":
        read = {"cls": ".last_hidden_state[:, 0]", "pooler": ".pooler_output.flatten(1)"}.get(
            str(description.get("pool")), ".last_hidden_state.mean(dim=1)")
        return (f'from transformers import AutoModel\n\nmodel = AutoModel.from_pretrained("{where}")\n'
                f'features = model(pixel_values=images){read}  # (N, {description["num_features"]})')
    if library == "torchvision":
        changes = "\n".join(f"model.{line}" for line in description.get("modifications", []))
        return (f"import torchvision\nfrom safetensors.torch import load_file\nfrom torch import nn\n\n"
                f"model = torchvision.models.{description['architecture']}()\n{changes}\n"
                f'model.load_state_dict(load_file("model.safetensors"), strict=False)  # only fc.* missing\n'
                f"features = model(images)  # (N, {description['num_features']})")
    spec = {"name": description["architecture"], **description.get("kwargs", {}), "in_channels": description["in_chans"]}
    return (f"from safetensors.torch import load_file\nfrom ebmssl.models import build_backbone\n\n"
            f"model = build_backbone({spec!r})\nmodel.load_state_dict(load_file(\"model.safetensors\"))\n"
            f"features = model(images)  # (N, {description['num_features']})")


def input_line(description: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """What ``images`` must be: the evaluation transform of the run's views (resize, [0, 1], normalise)."""
    prep = description.get("preprocessing") or {}
    size = prep.get("input_size")
    side = f"resized to {size[1]}x{size[2]}" if size else "at the training resolution"
    if "mean" in prep:
        stats = f"`(x - mean) / std` with mean {prep['mean']} and std {prep['std']} (in `config.json`)"
    else:
        stats = (f"normalised per channel with the mean and std of the training set "
                 f"(`{json.dumps(data.get('dataset'))}`; computed from its images)")
    return f"`images`: (N, {description['in_chans']}, H, W) floats {side}, scaled to [0, 1], then {stats}.\n"


def evaluation_table(evaluation: Mapping[str, Mapping[str, float]]) -> str:
    columns = [(key, label) for key, label in METRICS if any(key in row for row in evaluation.values())]
    if not columns:
        return "No final evaluation was run."
    lines = ["| encoder | " + " | ".join(label for _, label in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    names = {"trained": "**this model**", "random_init": "random init (same architecture)", "raw_pixels": "raw pixels",
             "target": "target (EMA) encoder"}
    for name, row in evaluation.items():
        cells = [f"{100 * row[key]:.1f} %" if key in row else "-" for key, _ in columns]
        lines.append(f"| {names.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnostics_table(diagnostics: Mapping[str, Any]) -> str:
    rows = [(k, v) for k, v in diagnostics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return "No diagnostics were recorded."
    return "\n".join(["| diagnostic | value |", "|---|---|", *(f"| {k} | {v:.4g} |" for k, v in rows)])


def front_matter(config: Mapping[str, Any], description: Mapping[str, Any], license_id: str, name: str) -> str:
    dataset = ((config.get("data") or {}).get("dataset") or {}).get("name")
    lines = ["---", f"library_name: {LIBRARY_NAMES.get(description['library'], 'pytorch')}", f"license: {license_id}",
             "pipeline_tag: image-feature-extraction", "tags:", "- self-supervised-learning", "- ebmssl",
             f"- {name}", f"- {description['library']}"]
    if dataset in HUB_DATASETS:
        lines += ["datasets:", f"- {HUB_DATASETS[dataset]}"]
    return "\n".join(lines + ["---", ""])


def model_card(
    config: Mapping[str, Any],
    report: Mapping[str, Any],
    description: Mapping[str, Any],
    plots: Sequence[str],
    license_id: str = "apache-2.0",
    repo_id: str | None = None,
) -> str:
    """README.md of an exported run (see the module docstring for its sections)."""
    data = config.get("data") or {}
    training = report.get("training") or {}
    seconds = float(training.get("seconds", 0.0))
    clean = {k: v for k, v in config.items() if not str(k).startswith("_")}
    name = method_name(config, report)
    sections = [
        front_matter(config, description, license_id, name),
        f"# {name}: a self-supervised {description['architecture']} backbone\n",
        f"Trained with ebmssl by self-supervised learning: {method_summary(config)}. "
        f"The backbone (`{description['library']}` `{description['architecture']}`, {description['in_chans']} input "
        f"channel(s), {description['num_features']} features) is exported without its projector or predictor.\n",
        "## How to load\n", "```python\n" + load_snippet(description, repo_id) + "\n```\n",
        input_line(description, data),
        "## Data\n",
        f"- dataset: `{json.dumps(data.get('dataset'))}`\n- views: `{json.dumps(data.get('views'))}`\n"
        f"- batch size: {data.get('batch_size', '?')}\n",
        "## Training\n",
        f"- steps: {training.get('steps', '?')}, images seen: {training.get('images_seen', '?')}\n"
        f"- training time: {seconds / 60:.1f} min ({seconds:.0f} s)\n",
        "## Evaluation\n",
        "Frozen features on the test set (kNN, a linear probe on all labels, a linear probe on a few labels per "
        "class), against the same architecture at random init and the raw pixels:\n",
        evaluation_table(report.get("evaluation") or {}) + "\n",
        "## Diagnostics\n", diagnostics_table(report.get("diagnostics") or {}) + "\n",
    ]
    collapse = report.get("collapse") or []
    sections.append("Collapse check: " + ("; ".join(collapse) if collapse else "no collapse detected.") + "\n")
    if plots:
        sections += ["## Plots\n", "\n".join(f"![{Path(p).stem}]({p})" for p in plots) + "\n"]
    sections += ["## Training configuration\n", "```yaml\n" + dump_config(clean).rstrip() + "\n```\n",
                 "## License\n", f"The weights are released under the `{license_id}` license (check the training data's "
                 f"own terms too).\n"]
    return "\n".join(sections)
