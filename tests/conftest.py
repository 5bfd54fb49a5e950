"""Shared test settings.

The tests run tiny models whose ops are too small to gain from intra-op threads; with two OpenMP
threads on the 2-core CI machine they spend most of their time spin-waiting (measured: 8x the CPU
time of one thread for a tiny-detector training step). One thread keeps the suite fast and steady.
"""

import torch

torch.set_num_threads(1)
