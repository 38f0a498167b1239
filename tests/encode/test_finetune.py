"""Cross-fitted fine-tuning: no unit embedded by a model trained on it; only the tail trains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from encode_toydata import ToyChips

from eocausal.encode import MosaiksEncoder, build_encoder
from eocausal.encode.finetune import finetune_crossfit
from eocausal.errors import InputDataError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")


def _factory():
    torch.manual_seed(0)
    return build_encoder("test_vit", in_chans=2, random_weights=True, img_size=32)


def test_crossfit_embeddings_come_from_the_other_folds_model(tmp_path):
    ds = ToyChips(16, in_chans=2, scales={"s": 32}, exclude={9})
    y = pd.Series({u: float(ds.chip(i, "s")[0].mean()) for i, u in enumerate(ds.unit_ids)})
    y.iloc[[1, 2]] = np.nan  # unlabelled units are embedded but not trained on
    groups = pd.Series({u: i // 2 for i, u in enumerate(ds.unit_ids)})
    res = finetune_crossfit(
        ds,
        _factory,
        y,
        tmp_path,
        n_folds=2,
        n_blocks=1,
        epochs=2,
        lr=1e-2,
        batch_size=4,
        groups=groups,
        embed_kwargs={"batch_size": 4, "progress": False, "accelerator": "cpu"},
    )
    base = _factory()
    folds = res.folds.set_index("unit_id")
    assert folds.groupby(groups.values)["fold"].nunique().max() == 1  # groups stay together
    assert not folds.loc[["u001", "u002"], "labelled"].any()
    for k, enc in enumerate(res.encoders):
        # only the last block and the final norm moved
        base_params = dict(base.model.named_parameters())
        for name, p in enc.model.named_parameters():
            if not name.startswith(("blocks.5.", "norm.")):
                assert torch.equal(p, base_params[name]), name
        assert not torch.equal(
            enc.model.blocks[5].mlp.fc1.weight, base.model.blocks[5].mlp.fc1.weight
        )
        torch.testing.assert_close(
            enc.model.patch_embed.proj.weight, base.model.patch_embed.proj.weight
        )
        # units of fold k are embedded by encoder k
        ids = [u for u in res.embeddings.unit_ids if folds.loc[u, "fold"] == k]
        pos = {u: i for i, u in enumerate(ds.unit_ids)}
        with torch.no_grad():
            want = enc(torch.stack([ds.chip(pos[u], "s") for u in ids])).numpy()
        got = res.embeddings.subset(ids).block("s")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert "u009" not in res.embeddings.unit_ids
    assert res.exclusions["unit_id"].tolist() == ["gone", "u009"]
    assert res.embeddings.metadata["finetune"]["n_labelled"] == 14
    assert all(len(l) == 2 and np.isfinite(l).all() for l in res.train_loss)


def test_finetune_needs_a_transformer(tmp_path):
    ds = ToyChips(8, in_chans=2, scales={"s": 32})
    y = pd.Series(np.arange(8.0), index=ds.unit_ids)
    with pytest.raises(InputDataError, match="needs a timm transformer"):
        finetune_crossfit(ds, lambda: MosaiksEncoder(2, n_features=4), y, tmp_path)
    with pytest.raises(InputDataError, match="not units of the dataset"):
        finetune_crossfit(ds, _factory, pd.Series({"nope": 1.0}), tmp_path)
