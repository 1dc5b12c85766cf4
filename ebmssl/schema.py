"""The accepted keys of a run config, section by section, and the one "unknown key, did you mean" check.

Every place that reads a config section checks its keys here, so a typo anywhere fails the same way:
the file, the dotted key, the closest accepted key, and the full list.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ebmssl.registry import ConfigError

TOP_LEVEL_KEYS = ("imports", "objective", "model", "data", "views", "train", "eval", "description", "reference")
DATA_KEYS = ("dataset", "test_dataset", "views", "batch_size", "num_train")
OBJECTIVE_KEYS = ("energy", "strategies", "pairs", "pair_reduction", "scale", "allow_collapse", "energy_weight")
# model section of the joint-embedding architecture (``model.architecture: joint_embedding``, the default)
MODEL_KEYS = ("architecture", "backbone", "projector", "predictor", "target", "forward_views", "online_probe")


def check_keys(section: Mapping[str, Any], accepted: Iterable[str], where: str, source: str) -> None:
    """Refuse unknown keys of ``section`` (a typo would otherwise be ignored), suggesting the closest one.

    ``where`` is the dotted prefix of the section (``"data."``, ``""`` for the top level); keys that
    start with ``_`` are private annotations (``_source``) and always accepted.
    """
    accepted = tuple(accepted)
    for key in section:
        if str(key).startswith("_") or key in accepted:
            continue
        close = difflib.get_close_matches(str(key), accepted, n=1)
        hint = f" Did you mean `{where}{close[0]}`?" if close else ""
        scope = f" under `{where.rstrip('.')}:`" if where else " at the top level"
        raise ConfigError(
            f"{source}: unknown key `{where}{key}`.{hint} Accepted keys{scope}: {', '.join(accepted)}."
        )
