"""GPU defaults: accelerate's mixed-precision setting wins when the config leaves it at `auto`; TF32 and
cuDNN autotuning on for CUDA (switchable, autotuning off when deterministic) and untouched elsewhere."""

from __future__ import annotations

import pytest
import torch

from ebmssl.registry import ConfigError
from ebmssl.schema import TrainSection, defaults, resolve_section
from ebmssl.training.build import apply_device_defaults, make_accelerator, resolve_mixed_precision

TRAIN_DEFAULTS = defaults(TrainSection)


@pytest.mark.parametrize("launched, configured, expected", [
    ("bf16", "auto", "bf16"),  # `accelerate launch --mixed_precision bf16` (it exports this variable)
    (None, "auto", "no"),
    ("bf16", "no", "no"),  # a value written in the config wins
])  # fmt: skip
def test_accelerate_mixed_precision_is_used_unless_the_config_sets_one(launched, configured, expected, monkeypatch) -> None:
    assert TRAIN_DEFAULTS["mixed_precision"] == "auto"
    if launched is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched)
    accelerator = make_accelerator({**TRAIN_DEFAULTS, "mixed_precision": configured})
    assert accelerator.mixed_precision == expected
    assert resolve_mixed_precision(configured) == (None if configured == "auto" else configured)


@pytest.fixture
def cuda_flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def flags() -> tuple[bool, bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark


def test_tf32_and_cudnn_benchmark_default_on_for_cuda_only(cuda_flags) -> None:
    assert apply_device_defaults(dict(TRAIN_DEFAULTS), torch.device("cpu")) == {}
    assert flags() == (False, False, False)
    assert apply_device_defaults(dict(TRAIN_DEFAULTS), torch.device("cuda")) == {"tf32": True, "cudnn_benchmark": True}
    assert flags() == (True, True, True)
    apply_device_defaults({**TRAIN_DEFAULTS, "tf32": False, "deterministic": True}, torch.device("cuda"))
    assert flags() == (False, False, False)
    apply_device_defaults({**TRAIN_DEFAULTS, "cudnn_benchmark": False}, torch.device("cuda"))
    assert flags() == (True, True, False)


@pytest.mark.parametrize("key, value", [("tf32", "yes"), ("cudnn_benchmark", 1), ("step_guard", "off"), ("mixed_precision", "fp8")])
def test_bad_values_name_the_key(key: str, value) -> None:
    with pytest.raises(ConfigError, match=f"train.{key}"):
        resolve_section({key: value}, TrainSection, "train.", "<test>")
