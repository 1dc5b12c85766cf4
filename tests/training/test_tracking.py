"""Experiment tracking (train.log_with) through Accelerate's trackers, with the real libraries offline:
TensorBoard read back from its event files, wandb in offline mode read back from its run file, MLflow on
a local file store read back through its client."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import yaml

from ebmssl.registry import ConfigError
from ebmssl.training.tracking import flatten_config
from ebmssl.training.validate import validate_config
from tests.training.test_trainer_features import quick


@pytest.mark.parametrize(("log_with", "message"), [
    (["tensorboard", "neptune"], "unknown tracker 'neptune'"),
    ({"wandb": {}}, "log_with"),
    ([3], "log_with"),
])  # fmt: skip
def test_bad_log_with_is_a_config_error_naming_the_key(log_with, message) -> None:
    config = quick("simclr")
    config["train"]["log_with"] = log_with
    with pytest.raises(ConfigError, match="train.log_with") as error:
        validate_config(config)
    assert message in str(error.value)


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_extra_is_a_config_error_naming_the_extra(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: find_spec and import both fail
    config = quick("simclr", f"train.log_with=[tensorboard,{name}]")
    with pytest.raises(ConfigError, match=rf'pip install "ebmssl\[{name}\]"'):
        validate_config(config)


def test_config_is_flattened_to_scalar_hyperparameters() -> None:
    train = {"optimizer": {"name": "sgd", "lr": 0.1}, "grad_clip": None, "log_with": ["tensorboard"]}
    flat = flatten_config({"train": train, "eval": {}, "seed": 3, "deterministic": False})
    assert flat == {"train.optimizer.name": "sgd", "train.optimizer.lr": 0.1, "train.grad_clip": "null",
                    "train.log_with": '["tensorboard"]', "eval": "{}", "seed": 3, "deterministic": False}  # fmt: skip


def wandb_records(path: Path) -> list:
    """The protobuf records of a wandb run file (a LevelDB-style log: 7-byte file header, 32 KiB blocks,
    each chunk led by crc32 (4 bytes), length (2) and type (1: whole, 2: first, 3: middle, 4: last))."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, chunk, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        chunk += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


@pytest.mark.slow
def test_tensorboard_wandb_and_mlflow_receive_metrics_config_and_plots(tmp_path: Path, monkeypatch) -> None:
    from ebmssl.training.run import run_training

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store in maintenance mode
    (tmp_path / "wandb_dir").mkdir()
    run_dir = tmp_path / "run"
    config = quick("simclr", "train.log_with=[tensorboard,wandb,mlflow]", "train.optimizer.lr=0.05", "eval.plots=true")
    report = run_training(config, run_dir)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in metrics}
    plots = {Path(p).stem for p in report["plots"]}
    assert len(losses) == 3 and {"loss", "spectrum"} <= plots

    # TensorBoard: RUN_DIR/tensorboard as before, scalars at their steps, the plots as images, the config as hparams
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {e.step: e.value for e in events.Scalars("loss")} == pytest.approx(losses, rel=1e-6)
    assert "diag/rankme" in events.Tags()["scalars"]
    assert {f"plots/{p}" for p in plots} <= set(events.Tags()["images"])
    assert events.Images("plots/loss")[0].width > 100
    (hparams,) = (run_dir / "tensorboard").glob("*/hparams.yml")
    hp = yaml.safe_load(hparams.read_text())
    assert hp["train.optimizer.lr"] == 0.05 and hp["train.log_every"] == 1 and hp["objective.energy.name"] == "cosine"

    # wandb offline: the run file holds the config, every logged step and the images; the PNGs are in files/media
    (run_file,) = (tmp_path / "wandb_dir" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]  # fmt: skip
    logged = {h["_step"]: h["loss"] for h in history if "loss" in h}
    assert logged == pytest.approx(losses, rel=1e-6)
    config = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}  # fmt: skip
    assert config["train.optimizer.lr"] == 0.05
    assert any(h.get("plots/loss/_type") == "image-file" for h in history)
    media = {p.name.split("_")[0] for p in run_file.parent.glob("files/media/images/plots/*.png")}
    assert {p.split("_")[0] for p in plots} <= media

    # MLflow: metrics, params and the plots as artifacts, read back through the client
    from mlflow.tracking import MlflowClient

    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("ebmssl").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    loss_history = client.get_metric_history(run.info.run_id, "loss")
    assert {m.step: m.value for m in loss_history} == pytest.approx(losses, rel=1e-6)
    assert float(run.data.params["train.optimizer.lr"]) == 0.05
    knn = client.get_metric_history(run.info.run_id, "final/trained/knn_accuracy")  # the final evaluation too
    assert [m.value for m in knn] == pytest.approx([report["evaluation"]["trained"]["knn_accuracy"]])
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {Path(p).name for p in report["plots"]}
