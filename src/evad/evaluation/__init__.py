"""Scorers that agree with the official ones; they read files and arrays, never the model.

* `evad.evaluation.ava`: AVA frame-mAP@0.5 (the ActivityNet / AVA v2.2 protocol): `evaluate_ava`,
  `evaluate_ava_files` and the streaming `AvaEvaluator`; its parts live in
  `evad.evaluation.ava.selection` (what the official scorer keeps, in its order),
  `evad.evaluation.ava.scoring` (matching, AP, `AvaResult`), `evad.evaluation.ava.evaluator` and,
  for the CSV readers and writers, `evad.evaluation.ava.io`; the per-class chart is in
  `evad.viz.ap_chart`.
* `evad.evaluation.tubes`: UCF101-24 / JHMDB frame-mAP and video-mAP from the standard
  ground-truth pickles (`load_groundtruth`, `evaluate_tubes`).
* `evad.evaluation.baselines`: reference points beside a frame-mAP (person AP of the boxes alone,
  class shares as scores, actor-level AP).
* `evad.evaluation.oracle`: how much perfect boxes or perfect labels would add.
"""

from evad.evaluation.ava import AvaEvaluator, AvaResult, evaluate_ava, evaluate_ava_files
from evad.evaluation.tubes import TubeMetrics, evaluate_tubes, load_groundtruth

__all__ = [
    "AvaEvaluator",
    "AvaResult",
    "TubeMetrics",
    "evaluate_ava",
    "evaluate_ava_files",
    "evaluate_tubes",
    "load_groundtruth",
]
