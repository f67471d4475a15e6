"""Starting a detector for other classes from a trained one (train.py `--init_from`).

Unlike ScaleMAE encoder weights (`load_pretrained`: the trunk only) and a resumed run (the same
run, optimizer and all), a trained detector gives every layer that does not depend on the
classes: trunk, pyramid, RPN and box head. The box predictor (torchvision's FastRCNNPredictor,
torchvision/models/detection/faster_rcnn.py) has one row of `cls_score` per class, background at
row 0, and four rows of `bbox_pred` per class in the same order; those rows are matched by class
name.

1. The model is built from the checkpoint's config before this is called, so every tensor outside
   the box predictor has its checkpoint's shape unless an override changed it: those that fit are
   copied whole, those that do not keep the model's fresh initialisation and are listed. When no
   trunk tensor fits, the checkpoint is of another model: an error.
2. Predictor rows: background, and each class whose name the checkpoint also has (wherever it sits
   in either list), are copied from the checkpoint's row of that name; the rows of the other
   classes keep the fresh initialisation (seeded as any new run's). When the predictor's input
   width differs (another box head), no row fits and all are listed.
3. The checkpoint's classes the new list does not have are named, so a misspelt class shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from scalemae_det.base.errors import InputError

PREDICTOR = "roi_heads.box_predictor."
CLS_SCORE = PREDICTOR + "cls_score."  # (classes + 1, D) weight, (classes + 1,) bias
BBOX_PRED = PREDICTOR + "bbox_pred."  # (4 (classes + 1), D) weight, (4 (classes + 1),) bias
TRUNK = "backbone.trunk."
SHOWN = 3  # tensors named in a line; the rest are counted


@dataclass(frozen=True)
class TransferReport:
    """What `init_from` took from the checkpoint, and what it left at the fresh initialisation."""

    copied: tuple[str, ...]  # tensors copied whole (rule 1)
    not_fitting: tuple[str, ...]  # tensors left at initialisation: another shape (rule 1)
    kept_classes: tuple[str, ...]  # predictor rows copied by name (rule 2)
    new_classes: tuple[str, ...]  # predictor rows freshly initialised (rule 2)
    dropped_classes: tuple[str, ...]  # the checkpoint's classes not trained on (rule 3)

    def lines(self) -> list[str]:
        def some(items) -> str:
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            return ", ".join(items[:SHOWN]) + more

        out = [
            f"kept {len(self.copied)} tensors (trunk, pyramid, RPN, box head)",
            f"classes kept by name: {some(self.kept_classes) or 'none'}; new (initialised): "
            f"{some(self.new_classes) or 'none'}",
        ]
        if self.dropped_classes:
            out.append(f"classes of the checkpoint not trained on: {some(self.dropped_classes)}")
        if self.not_fitting:
            out.append(
                f"{len(self.not_fitting)} tensor(s) did not fit and were initialised: "
                f"{some(self.not_fitting)}"
            )
        return out


def init_from(
    model: nn.Module, ckpt: dict, class_names: list[str], path: str | Path
) -> TransferReport:
    """Copy a trained detector's weights into `model` (built for `class_names`) by the module
    doc's rules; `ckpt` is a detector checkpoint (`detector_state`'s dict)."""
    own = model.state_dict()
    theirs = ckpt["model"]
    old_names = list(ckpt["class_names"])
    update, not_fitting = {}, []
    for key, value in theirs.items():
        if key.startswith(PREDICTOR) or key not in own:
            continue
        if tuple(value.shape) == tuple(own[key].shape):
            update[key] = value
        else:
            not_fitting.append(key)
    not_fitting += [k for k in own if k not in theirs and not k.startswith(PREDICTOR)]
    if not any(k.startswith(TRUNK) for k in update):
        raise InputError(
            f"{path}: no trunk weight fits this model; the checkpoint is of another model size "
            f"({', '.join(not_fitting[:SHOWN])} differ)"
        )
    # rule 2: row k of the new predictor <- row of the same class name in the checkpoint
    rows = [(0, 0)] + [
        (k, old_names.index(name) + 1)
        for k, name in enumerate(class_names, start=1)
        if name in old_names
    ]
    predictor = [k for k in own if k.startswith(PREDICTOR)]
    fits = all(k in theirs and theirs[k].shape[1:] == own[k].shape[1:] for k in predictor) and all(
        theirs[k].shape[0] == (len(old_names) + 1) * _rows(k) for k in predictor
    )
    if fits:
        for key in predictor:
            per = _rows(key)
            merged = own[key].clone()
            for new, old in rows:
                merged[new * per : (new + 1) * per] = theirs[key][old * per : (old + 1) * per]
            update[key] = merged
        kept = tuple(name for name in class_names if name in old_names)
    else:
        not_fitting += predictor
        kept = ()
    model.load_state_dict({**own, **update})
    return TransferReport(
        copied=tuple(k for k in update if not k.startswith(PREDICTOR)),
        not_fitting=tuple(not_fitting),
        kept_classes=kept,
        new_classes=tuple(name for name in class_names if name not in kept),
        dropped_classes=tuple(name for name in old_names if name not in class_names),
    )


def _rows(key: str) -> int:
    """Rows per class of a predictor tensor: 1 for the class scores, 4 for the box deltas."""
    return 4 if key.startswith(BBOX_PRED) else 1


__all__ = ["TransferReport", "init_from"]
