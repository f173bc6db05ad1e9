"""A small text classifier that needs no tokenizer download: hashed character n-grams.

Characters (not words) make Chinese work without a segmenter; n-grams of 1-3
characters plus whole words are hashed (crc32, stable across processes, unlike
``hash()``) into a fixed number of buckets and averaged by an EmbeddingBag.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

BUCKETS = 1 << 15


def features(text: str, buckets: int = BUCKETS) -> list[int]:
    """Bucket ids of the text's character 1-3-grams and words (lower-cased)."""
    text = " ".join(text.lower().split())
    padded = f"^{text}$"
    grams = [padded[i : i + n] for n in (1, 2, 3) for i in range(len(padded) - n + 1)]
    grams += [f"w:{word}" for word in text.split()]
    return [zlib.crc32(gram.encode("utf-8")) % buckets for gram in grams] or [0]


def batch_features(texts: list[str], buckets: int = BUCKETS) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat ids, offsets) for nn.EmbeddingBag."""
    ids: list[int] = []
    offsets: list[int] = []
    for text in texts:
        offsets.append(len(ids))
        ids.extend(features(text, buckets))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


class IntentClassifier(nn.Module):
    def __init__(self, num_classes: int, buckets: int = BUCKETS, dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(buckets, dim, mode="mean")
        self.head = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, num_classes)
        )

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids, offsets))
