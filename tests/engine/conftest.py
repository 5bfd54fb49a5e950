"""Engine tests import their tiny dataset helper (`tiny_data.py`) from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
