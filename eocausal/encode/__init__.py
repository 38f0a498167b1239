"""Encoders: chips -> embeddings (timm backbones with local, verified weights; MOSAIKS).

The embedding job (:func:`embed`) runs Lightning's ``Trainer.predict`` on one
CPU, one GPU or many nodes, writes resumable per-rank shards and merges them
into an :class:`~eocausal.embeddings.Embeddings` artifact.
"""

from eocausal.encode.backbones import TimmEncoder, build_encoder
from eocausal.encode.finetune import FinetuneResult, finetune_crossfit
from eocausal.encode.job import EmbedResult, embed, merge_shards
from eocausal.encode.mosaiks import MosaiksEncoder
from eocausal.encode.temporal import TemporalAttentionPooler, aggregate_dates, temporal_pool
from eocausal.encode.weights import (
    WeightsEntry,
    default_cache_dir,
    fetch_weights,
    get_weights_entry,
    list_weights,
    load_state_dict,
    record_sha256,
    register_weights,
    verify_sha256,
)

__all__ = [
    "EmbedResult",
    "FinetuneResult",
    "MosaiksEncoder",
    "TemporalAttentionPooler",
    "TimmEncoder",
    "WeightsEntry",
    "aggregate_dates",
    "build_encoder",
    "default_cache_dir",
    "embed",
    "fetch_weights",
    "finetune_crossfit",
    "get_weights_entry",
    "list_weights",
    "load_state_dict",
    "merge_shards",
    "record_sha256",
    "register_weights",
    "temporal_pool",
    "verify_sha256",
]
