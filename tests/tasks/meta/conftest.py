"""One intra-op thread: the tiny models here are latency-bound, and on a shared 2-core machine
torch's default thread pool makes them many times slower."""

import torch

torch.set_num_threads(1)
