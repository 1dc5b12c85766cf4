"""Which labelled data the kNN monitor and the final kNN / linear evaluation of a run use.

* ``eval.dataset`` set: its train split is the kNN memory / linear-probe training set and its test split
  the queries (the way to evaluate a run trained on an unlabelled folder or STL-10's unlabelled split).
* otherwise, a labelled training set is its own evaluation train set and ``data.test_dataset`` (default:
  the training dataset spec with ``train: false``) the test set.
* an unlabelled training set without ``eval.dataset``: no kNN / linear evaluation, and the reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_labelled(dataset: Any) -> bool:
    targets = getattr(dataset, "targets", None)
    return bool(getattr(dataset, "num_classes", 0)) and targets is not None and bool((targets >= 0).any())


def eval_datasets(
    data_cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any], train_set: Any, where: str
) -> tuple[Any, Any, str | None]:
    """``(eval_train_set, test_set, skip_reason)``; both sets None (and a reason) when there is nothing to
    evaluate on."""
    from ebmssl.data import build_dataset

    spec = eval_cfg.get("dataset")
    if spec:
        return (
            build_dataset(spec, train=True, where=f"{where}: eval.dataset"),
            build_dataset(spec, train=False, where=f"{where}: eval.dataset"),
            None,
        )
    if not is_labelled(train_set):
        reason = (
            f"the training set {getattr(train_set, 'name', '?')} has no labels and no `eval.dataset` is set, so the "
            f"kNN monitor and the final kNN / linear evaluation are skipped. Add e.g. `eval: {{dataset: {{name: stl10}}}}` "
            f"(a labelled dataset with train and test splits) to evaluate the encoder."
        )
        return None, None, reason
    test_spec = data_cfg.get("test_dataset") or data_cfg["dataset"]
    return train_set, build_dataset(test_spec, train=False, where=f"{where}: data.test_dataset"), None
