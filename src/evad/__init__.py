"""evad: efficient spatio-temporal video action detection (EVAD, Chen et al., ICCV 2023)."""

__version__ = "0.1.0"
