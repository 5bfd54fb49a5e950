"""UCF101-24 / JHMDB frame-mAP and video-mAP: the MOC-detector protocol at tubelet length K = 1.

SPEC section 11 records the rules and section 9 the ground-truth pickle. In short:

- Geometry uses the +1 pixel rule: a box ``(x1, y1, x2, y2)`` covers ``(x2 - x1 + 1) * (y2 - y1 + 1)``
  pixels. The spatio-temporal IoU of two tubes is their temporal IoU (frame ranges, +1) times the
  mean per-frame IoU over the frames they share (`geometry`).
- Every (video, frame, class) group of detections first goes through a score-decay NMS at 0.6
  (`ranking`).
- Frame-AP at IoU 0.5 ranks a class's detections over every frame of every test video; each takes
  the best remaining ground-truth box of its frame, which it removes on a hit. AP is the trapezoidal
  area under the precision-recall curve from (recall 0, precision 1), without an envelope
  (`frame_ap`, `ranking.average_precision`).
- Tubes are linked per video and class from the top 10 decayed boxes of each frame, ended at their
  first frame without a match, and kept at mean score >= 0.005 and length >= 15. Video-AP ranks
  them after a tube NMS at spatio-temporal IoU 0.3 (`video_ap`).

The inputs are the ground-truth pickle (`groundtruth`) and a detections CSV (`detections`);
`metrics.evaluate_tubes` runs the whole protocol.

Numerics follow the reference so that ties and threshold comparisons fall the same way: detection
boxes and scores are float32 (the reference's detection arrays are), IoUs are computed in the dtype
numpy promotes the operands to, tube scores are float32 means, and precision and recall are stored in
float32 before the area is summed. Scores are sorted as the reference sorts them (see `ranking`).
"""

from evad.evaluation.tubes.detections import FrameDetections, read_detections
from evad.evaluation.tubes.frame_ap import FRAME_IOU, frame_average_precision
from evad.evaluation.tubes.geometry import box_iou, spatiotemporal_iou
from evad.evaluation.tubes.groundtruth import TubeGroundTruth, load_groundtruth
from evad.evaluation.tubes.metrics import (
    DEFAULT_VIDEO_THRESHOLDS,
    TubeMetrics,
    evaluate_tubes,
    parse_iou_thresholds,
)
from evad.evaluation.tubes.ranking import DECAY_NMS_IOU, average_precision, decay_nms
from evad.evaluation.tubes.video_ap import (
    BOXES_PER_FRAME,
    LINK_IOU,
    MIN_TUBE_LENGTH,
    MIN_TUBE_SCORE,
    TUBE_NMS_IOU,
    build_tubes,
    link_tubes,
    tube_nms,
    video_average_precision,
)

__all__ = [
    "BOXES_PER_FRAME",
    "DECAY_NMS_IOU",
    "DEFAULT_VIDEO_THRESHOLDS",
    "FRAME_IOU",
    "LINK_IOU",
    "MIN_TUBE_LENGTH",
    "MIN_TUBE_SCORE",
    "TUBE_NMS_IOU",
    "FrameDetections",
    "TubeGroundTruth",
    "TubeMetrics",
    "average_precision",
    "box_iou",
    "build_tubes",
    "decay_nms",
    "evaluate_tubes",
    "frame_average_precision",
    "link_tubes",
    "load_groundtruth",
    "parse_iou_thresholds",
    "read_detections",
    "spatiotemporal_iou",
    "tube_nms",
    "video_average_precision",
]
