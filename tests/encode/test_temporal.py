"""Temporal aggregation: fixed rules and the cross-fitted attention pooler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.embeddings import Embeddings
from eocausal.encode.temporal import TemporalAttentionPooler, aggregate_dates, temporal_pool
from eocausal.errors import InputDataError, NotFittedError


def test_aggregate_dates_brute_force():
    z = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    mean = aggregate_dates(z, valid, "mean")
    torch.testing.assert_close(mean[0], (z[0, 0] + z[0, 2]) / 2)
    torch.testing.assert_close(mean[1], z[1].mean(0))  # no valid date: all dates
    torch.testing.assert_close(aggregate_dates(z, valid, "concat")[1], z[1].reshape(-1))
    with pytest.raises(InputDataError, match="Unknown temporal"):
        aggregate_dates(z, valid, "max")


def _signal_at_one_date(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4, 6)).astype(np.float32)
    y = 2.0 * z[:, 2, 0] + 0.1 * rng.normal(size=n)
    return z, y


def _r2_linear(x, y):
    """Out-of-sample R^2 of OLS fitted on the first half, scored on the second."""
    h = len(y) // 2
    a = np.c_[np.ones(len(y)), x]
    beta = np.linalg.lstsq(a[:h], y[:h], rcond=None)[0]
    resid = y[h:] - a[h:] @ beta
    return 1 - resid.var() / y[h:].var()


def test_pooler_attends_to_the_informative_date_and_beats_the_mean():
    z, y = _signal_at_one_date(256, 0)
    params = {
        "d_model": 16,
        "n_heads": 2,
        "dropout": 0.0,
        "max_epochs": 20,
        "lr": 1e-2,
        "batch_size": 32,
        "random_state": 0,
    }
    pooler = TemporalAttentionPooler(4, **params).fit(z, y)
    assert pooler.representation_oof_.shape == (256, 16)
    # cross-fitted predictions of the target are good, and the mean over dates is not
    r2_oof = 1 - np.mean((pooler.prediction_oof_ - y) ** 2) / y.var()
    assert r2_oof > 0.75
    assert _r2_linear(z.mean(1), y) < 0.4
    assert _r2_linear(pooler.representation_oof_, y) > 0.7
    # the attention prefers date 2, where the signal is
    att = pooler.attention_oof_.mean(0)
    assert att[2] > max(att[[0, 1, 3]]) + 0.05
    # same seed, same numbers
    again = TemporalAttentionPooler(4, **params).fit(z, y)
    np.testing.assert_array_equal(again.representation_oof_, pooler.representation_oof_)
    assert pooler.transform(z[:5]).shape == (5, 16)


def test_pooler_masks_invalid_dates_and_checks_inputs():
    z, y = _signal_at_one_date(60, 1)
    valid = np.ones((60, 4), bool)
    valid[:, 3] = False
    p = TemporalAttentionPooler(4, d_model=8, n_heads=2, max_epochs=2).fit(
        z.reshape(60, -1), y, date_valid=valid
    )
    assert np.all(p.attention_oof_[:, 3] == 0)
    np.testing.assert_allclose(p.attention_oof_.sum(1), 1, rtol=1e-5)
    with pytest.raises(NotFittedError):
        TemporalAttentionPooler(4).transform(z)
    with pytest.raises(InputDataError, match="n_dates=5"):
        TemporalAttentionPooler(5).fit(z.reshape(60, -1)[:, :22], y)
    with pytest.raises(InputDataError, match="0/1"):
        TemporalAttentionPooler(4, task="classification").fit(z, y)


def test_temporal_pool_on_embeddings_records_the_choice():
    z, y = _signal_at_one_date(80, 2)
    emb = Embeddings(
        np.array([f"u{i}" for i in range(80)]), {"s": z.reshape(80, -1)}, {"temporal": "concat"}
    )
    out = temporal_pool(emb, y, n_dates=4, d_model=8, n_heads=2, max_epochs=2)
    assert out.block("s").shape == (80, 8)
    assert out.metadata["temporal"] == "transformer"
    assert out.metadata["temporal_pooler"]["d_model"] == 8
    with pytest.raises(InputDataError, match="temporal='concat'"):
        temporal_pool(Embeddings(emb.unit_ids, emb.vectors, {"temporal": "mean"}), y, n_dates=4)
