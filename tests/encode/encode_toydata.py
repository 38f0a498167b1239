"""A small map-style chip dataset with the ChipDataset item layout (for job tests)."""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import Dataset


class ToyChips(Dataset):
    """Deterministic chips: item ``i`` is drawn from a generator seeded with ``i``.

    ``scales`` maps scale name -> out_px; ``n_dates`` adds a date axis where
    date 1 of every odd item is fully masked; items in ``exclude`` are
    excluded at read time with zero chips.
    """

    def __init__(self, n=12, *, in_chans=3, scales=None, n_dates=None, exclude=()):
        self.n = n
        self.in_chans = in_chans
        self.scale_px = dict(scales or {"small": 16, "large": 24})
        self.n_dates = n_dates
        self.exclude = set(exclude)
        self.unit_ids = [f"u{i:03d}" for i in range(n)]
        self.exclusions = pd.DataFrame({"unit_id": ["gone"], "reason": ["outside all imagery"]})
        self.spec = None

    def __len__(self):
        return self.n

    def chip(self, i, scale):
        g = torch.Generator().manual_seed(1000 * i + len(scale))
        px = self.scale_px[scale]
        shape = (
            (self.in_chans, px, px)
            if self.n_dates is None
            else (self.n_dates, self.in_chans, px, px)
        )
        return torch.rand(shape, generator=g)

    def mask(self, i, scale):
        px = self.scale_px[scale]
        if self.n_dates is None:
            return torch.ones(px, px, dtype=torch.bool)
        m = torch.ones(self.n_dates, px, px, dtype=torch.bool)
        if i % 2:
            m[1] = False
        return m

    def __getitem__(self, i):
        excluded = i in self.exclude
        chips = {s: self.chip(i, s) * (0 if excluded else 1) for s in self.scale_px}
        masks = {s: self.mask(i, s) & (not excluded) for s in self.scale_px}
        return {
            "unit_id": self.unit_ids[i],
            "index": i,
            "chips": chips,
            "masks": masks,
            "valid_fraction": {s: torch.tensor(0.0 if excluded else 1.0) for s in self.scale_px},
            "excluded": excluded,
            "reason": "valid fraction 0.000 < min_valid_fraction 0.5" if excluded else "",
        }


class SlowEncoder(torch.nn.Module):
    """Wraps an encoder and sleeps per batch, so a test can kill a job mid-way."""

    def __init__(self, enc, seconds=0.3):
        super().__init__()
        self.enc = enc
        self.seconds = seconds
        self.name, self.in_chans, self.embed_dim = enc.name, enc.in_chans, enc.embed_dim
        self.input_size, self.weights_sha256 = enc.input_size, enc.weights_sha256

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return self.enc(x)
