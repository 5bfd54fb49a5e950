"""AVA frame-mAP with the official ActivityNet semantics (SPEC section 10).

The numbers agree with the official scorer (ActivityNet ``Evaluation/get_ava_performance.py``
with an excluded-timestamps file) on any valid input, including the order-dependent corners:
which of several equal-score detections survive the 50-per-keyframe cap, which equal-IoU
ground-truth box a detection takes, and how ``np.argsort`` orders equal scores. The rules:

- only the label map's classes count; rows of other classes are dropped (with a warning);
- a keyframe is (video id, timestamp printed as a number with 6 decimals), so ``902``, ``0902``
  and ``902.0`` are one keyframe;
- per keyframe, the 50 highest-scoring detections are kept, fed in file order into a min-heap
  that a row enters only when its score is strictly greater than the heap's smallest;
- excluded keyframes are dropped; detections on keyframes the ground-truth CSV never mentions are
  ignored (with a warning), while a keyframe it mentions without a box of the class makes them
  false positives;
- per keyframe and class, detections in descending score take their single best-IoU box (first
  box on ties); a hit needs IoU >= 0.5 and a box still free, there is no second choice. (With
  ``input_order`` and no cap, they take them in the order given instead: the evaluation in EVAD's
  own code, see :func:`evaluate_ava`.)
- detections with zero or negative width or height are dropped after the cap (inverted boxes with
  a warning: they usually mean swapped columns);
- AP is the PASCAL VOC all-points area under the precision envelope; classes with ground truth
  but no detections score 0; classes without ground truth are left out of the mean.

The package's top level holds the entry points `evaluate_ava` and `evaluate_ava_files` and re-exports the
public names of its parts: `evad.evaluation.ava.selection` (ground-truth preparation, the class and
keyframe filters, the per-keyframe cap), `evad.evaluation.ava.scoring` (matching, AP, `AvaResult`)
and `evad.evaluation.ava.evaluator` (the streaming `AvaEvaluator`).

Reading (`evad.evaluation.ava.io`, re-exported here; the parsers are in
`evad.evaluation.ava.csv_reader`, the `AvaTable` they fill in `evad.evaluation.ava.table`) is
vectorised: a 1.5-million-row detections file is read and scored in a few seconds
(``python benchmarks/bench_ava_eval.py``), where the official scorer needs about 40.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from evad.evaluation.ava.evaluator import AvaEvaluator
from evad.evaluation.ava.io import (
    AvaInputWarning,
    AvaTable,
    Key,
    keyframe_key,
    read_detections,
    read_exclusions,
    read_groundtruth,
    read_labelmap,
    write_detections_csv,
    write_labelmap,
)
from evad.evaluation.ava.scoring import (
    GROUPS,
    IOU_THRESHOLD,
    MAX_DETECTIONS_PER_KEYFRAME,
    AvaResult,
    score_detections,
)
from evad.evaluation.ava.selection import prepare_groundtruth

__all__ = [
    "GROUPS",
    "IOU_THRESHOLD",
    "MAX_DETECTIONS_PER_KEYFRAME",
    "AvaEvaluator",
    "AvaInputWarning",
    "AvaResult",
    "AvaTable",
    "evaluate_ava",
    "evaluate_ava_files",
    "keyframe_key",
    "read_detections",
    "read_exclusions",
    "read_groundtruth",
    "read_labelmap",
    "write_detections_csv",
    "write_labelmap",
]


def evaluate_ava(
    groundtruth: AvaTable,
    detections: AvaTable,
    labelmap: Mapping[int, str],
    exclusions: Iterable[Key] = (),
    max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    input_order: bool = False,
) -> AvaResult:
    """Score detections against ground truth with the official AVA protocol.

    Args:
        groundtruth: Ground-truth rows (:func:`read_groundtruth`).
        detections: Detection rows (:func:`read_detections`, or :meth:`AvaEvaluator.detections`).
        labelmap: Class id -> name of the evaluated classes (:func:`read_labelmap`).
        exclusions: Keyframe keys to ignore (:func:`read_exclusions`).
        max_per_keyframe: Detections kept per keyframe, highest scores first: 50 in the ActivityNet
            scorer (SPEC section 10); 0 keeps all.
        input_order: Match each keyframe's detections to the ground truth in their input order
            (file or processing order: for evad's detections, the model's query order) instead of
            by descending score; needs `max_per_keyframe` 0. With both, this is the evaluation in
            EVAD's own code, which made the paper's numbers: it neither caps nor sorts, so of two
            boxes of a class on one person the earlier query takes the hit even if it scores lower.

    Warns:
        AvaInputWarning: For rows the official scorer silently ignores.

    Raises:
        UserError: If the ground truth has no box of the label map's classes.
    """
    if max_per_keyframe < 0:
        raise ValueError(f"max_per_keyframe must be >= 0, got {max_per_keyframe}")
    gt = prepare_groundtruth(groundtruth, labelmap, exclusions)
    return score_detections(gt, detections, max_per_keyframe, input_order)


def evaluate_ava_files(
    groundtruth: str | os.PathLike,
    detections: str | os.PathLike,
    labelmap: str | os.PathLike,
    exclusions: str | os.PathLike | None = None,
    max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    input_order: bool = False,
) -> AvaResult:
    """Read the files and score them (see :func:`evaluate_ava`).

    Example:
        >>> result = evaluate_ava_files("ava_val_v2.2.csv", "detections.csv",
        ...     "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        ...     "ava_val_excluded_timestamps_v2.2.csv")  # doctest: +SKIP
        >>> print(f"{100 * result.mean_ap:.2f}")  # doctest: +SKIP
    """
    names = read_labelmap(labelmap)
    excluded = read_exclusions(exclusions) if exclusions is not None else set()
    return evaluate_ava(
        read_groundtruth(groundtruth),
        read_detections(detections),
        names,
        excluded,
        max_per_keyframe,
        input_order,
    )
