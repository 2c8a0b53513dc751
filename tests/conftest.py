"""Suite-wide settings: single-threaded torch.

The tests use small tensors; on a 2-core machine intra-op threading only adds overhead (a
batched 10×10 ``linalg.solve_ex`` took ~11 ms with 2 busy threads and ~20 µs with one).
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
