"""Hungarian matching and set-prediction / action losses (paper Sec. 3.4, SPEC section 5)."""

from evad.losses.criterion import DEFAULT_WEIGHTS, SetCriterion, validate_targets
from evad.losses.matcher import HungarianMatcher

__all__ = ["DEFAULT_WEIGHTS", "HungarianMatcher", "SetCriterion", "validate_targets"]
