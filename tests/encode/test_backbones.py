"""Weights registry and safe local loading: real files through the real loader."""

from __future__ import annotations

import hashlib
import io
import re
import sys
import urllib.request

import pytest
import timm
import torch

from eocausal.encode import weights
from eocausal.encode.backbones import build_encoder
from eocausal.encode.weights import (
    WeightsEntry,
    fetch_weights,
    get_weights_entry,
    list_weights,
    load_state_dict,
    register_weights,
    verify_sha256,
)
from eocausal.errors import WeightsError
from eocausal.imagery.bands import RECIPES

IN_CHANS = 4


def _tiny_vit(seed=0, **kwargs):
    torch.manual_seed(seed)
    kw = {"in_chans": IN_CHANS, "img_size": 32, "num_classes": 0} | kwargs
    return timm.create_model("test_vit", pretrained=False, **kw).eval()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def saved_vit(tmp_path):
    """A random test_vit saved as a plain state dict; returns (model, path)."""
    model = _tiny_vit()
    path = tmp_path / "test_vit.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture
def test_entry(saved_vit, monkeypatch):
    """A test-only registry entry for the saved test_vit, removed afterwards."""
    _, path = saved_vit
    entry = WeightsEntry(
        name="test_vit_random",
        arch="test_vit",
        in_chans=IN_CHANS,
        bands=("b1", "b2", "b3", "b4"),
        recipe="none",
        filename=path.name,
        sha256=_sha(path),
        url="https://example.invalid/test_vit.pth",
        input_size=32,
    )
    monkeypatch.setitem(weights._REGISTRY, entry.name, entry)
    return entry


def test_registry_loads_weights_exactly(saved_vit, test_entry):
    model, path = saved_vit
    enc = build_encoder("test_vit_random", cache_dir=path.parent, img_size=32)
    assert enc.name == "test_vit_random"
    assert (enc.in_chans, enc.embed_dim, enc.input_size) == (IN_CHANS, 64, 32)
    assert enc.weights_sha256 == _sha(path)
    x = torch.rand(3, IN_CHANS, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x), rtol=0, atol=0)
    other = _tiny_vit(seed=1)
    with torch.no_grad():
        assert not torch.allclose(other(x), model(x))


def test_timm_arch_with_weights_path_needs_the_full_sha256(saved_vit):
    model, path = saved_vit
    with pytest.raises(WeightsError, match=r"`sha256` is required.*sha256sum.*random_weights=True"):
        build_encoder("test_vit", weights_path=path, in_chans=IN_CHANS, img_size=32)
    with pytest.raises(WeightsError, match="only a sha256 prefix.*no full digest is recorded"):
        build_encoder(
            "test_vit", weights_path=path, in_chans=IN_CHANS, sha256=_sha(path)[:8], img_size=32
        )
    enc = build_encoder(
        "test_vit", weights_path=path, in_chans=IN_CHANS, sha256=_sha(path), img_size=32
    )
    x = torch.rand(2, IN_CHANS, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x), rtol=0, atol=0)
    assert enc.weights_sha256 == _sha(path)
    with pytest.raises(WeightsError, match="expected sha256 0{64}"):
        build_encoder(
            "test_vit", weights_path=path, in_chans=IN_CHANS, sha256="0" * 64, img_size=32
        )


def test_wrong_hash_is_a_clear_error(saved_vit, test_entry, monkeypatch):
    _, path = saved_vit
    bad = WeightsEntry(**{**test_entry.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(weights._REGISTRY, bad.name, bad)
    with pytest.raises(WeightsError, match=r"expected sha256 0{64}, got " + _sha(path)) as err:
        build_encoder("test_vit_random", cache_dir=path.parent, img_size=32)
    assert str(path) in str(err.value)
    with pytest.raises(WeightsError, match="sha256 prefix"):
        verify_sha256(path, "deadbeef")


def test_missing_patch_embed_keys_are_refused(saved_vit, tmp_path):
    model, _ = saved_vit
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("patch_embed.")}
    path = tmp_path / "no_patch_embed.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys \['patch_embed.proj.weight'"):
        build_encoder(
            "test_vit", weights_path=path, sha256=_sha(path), in_chans=IN_CHANS, img_size=32
        )


def test_missing_norm_is_allowed_but_unexpected_keys_are_not(saved_vit, tmp_path):
    model, _ = saved_vit
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("norm.")}
    path = tmp_path / "no_norm.pth"
    torch.save(state, path)
    enc = build_encoder(
        "test_vit", weights_path=path, sha256=_sha(path), in_chans=IN_CHANS, img_size=32
    )
    torch.testing.assert_close(
        enc.model.patch_embed.proj.weight, model.patch_embed.proj.weight, rtol=0, atol=0
    )
    state = dict(model.state_dict()) | {"decoder.weight": torch.zeros(3)}
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"unexpected keys \['decoder.weight'\]"):
        build_encoder(
            "test_vit", weights_path=path, sha256=_sha(path), in_chans=IN_CHANS, img_size=32
        )


def test_checkpoint_with_classifier_head_under_model_key(tmp_path):
    with_head = _tiny_vit(num_classes=10)
    path = tmp_path / "with_head.pth"
    torch.save({"model": with_head.state_dict()}, path)
    enc = build_encoder(
        "test_vit", weights_path=path, sha256=_sha(path), in_chans=IN_CHANS, img_size=32
    )
    x = torch.rand(2, IN_CHANS, 32, 32)
    with torch.no_grad():
        pooled = with_head.forward_head(with_head.forward_features(x), pre_logits=True)
        torch.testing.assert_close(enc(x), pooled, rtol=0, atol=0)


def test_wrong_in_chans_names_the_shapes(saved_vit):
    _, path = saved_vit
    with pytest.raises(WeightsError, match=r"patch_embed.proj.weight: file \(64, 4, 16, 16\)"):
        build_encoder("test_vit", weights_path=path, sha256=_sha(path), in_chans=3, img_size=32)


def test_pos_embed_resampled_for_another_img_size(saved_vit):
    model, path = saved_vit
    kw = {"weights_path": path, "sha256": _sha(path), "in_chans": IN_CHANS}
    enc = build_encoder("test_vit", img_size=48, **kw)
    assert enc.input_size == 48
    assert enc.model.pos_embed.shape[1] == 1 + 9
    torch.testing.assert_close(enc.model.cls_token, model.cls_token, rtol=0, atol=0)
    assert enc(torch.rand(1, IN_CHANS, 48, 48)).shape == (1, 64)
    dyn = build_encoder("test_vit", img_size=32, dynamic_img_size=True, **kw)
    assert dyn.input_size is None
    assert dyn(torch.rand(2, IN_CHANS, 48, 48)).shape == (2, 64)


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickled_objects_are_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _Evil()}, path)
    with pytest.raises(WeightsError) as err:
        build_encoder("test_vit", weights_path=path, sha256=_sha(path), in_chans=IN_CHANS)
    assert str(err.value) == (
        f"{path} holds pickled Python objects, which eocausal never loads; save a plain "
        "state_dict (torch.save(model.state_dict(), path)) or a safetensors file"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "pickle code ran" not in capsys.readouterr().out
    for name, data, reason in [
        ("junk.pth", b"not a weights file", "UnpicklingError: Unsupported operand 110"),
        ("cut.pth", path.read_bytes()[:200], "RuntimeError: PytorchStreamReader failed"),
    ]:
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(WeightsError, match=rf"^Could not read .*{name}': {reason}") as err:
            load_state_dict(bad, sha256=_sha(bad))
        assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


def _safetensors_bytes(model, nonce=""):
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save(tensors, metadata={"nonce": nonce})


def test_safetensors_files_load_with_the_same_checks(saved_vit, tmp_path, monkeypatch):
    model, _ = saved_vit
    path = tmp_path / "w.safetensors"
    path.write_bytes(_safetensors_bytes(model))
    kw = {"weights_path": path, "in_chans": IN_CHANS, "img_size": 32}
    enc = build_encoder("test_vit", sha256=_sha(path), **kw)
    x = torch.rand(2, IN_CHANS, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x), rtol=0, atol=0)
    assert enc.weights_sha256 == _sha(path)
    with pytest.raises(WeightsError, match="corrupt or not the registered file"):
        build_encoder("test_vit", sha256="1" * 64, **kw)
    with pytest.raises(WeightsError, match="`sha256` is required"):
        build_encoder("test_vit", **kw)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(WeightsError, match=r"needs the `safetensors` package \(pip install"):
        build_encoder("test_vit", sha256=_sha(path), **kw)


def _prefix_only_entry(path, monkeypatch, digits=2):
    """A registry entry pinned, as torchgeo's are, by a sha256 prefix only."""
    entry = WeightsEntry(
        name="test_vit_prefix",
        arch="test_vit",
        in_chans=IN_CHANS,
        bands=("b1", "b2", "b3", "b4"),
        recipe="none",
        filename=path.name,
        sha256=_sha(path)[:digits],
        url="https://example.invalid/" + path.name,
        input_size=32,
    )
    monkeypatch.setitem(weights._REGISTRY, entry.name, entry)
    return entry


def test_prefix_pins_need_a_recorded_full_digest_that_catches_a_swap(tmp_path, monkeypatch):
    model = _tiny_vit()
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / "w.safetensors"
    path.write_bytes(_safetensors_bytes(model))
    digest = _sha(path)
    entry = _prefix_only_entry(path, monkeypatch)
    with pytest.raises(
        WeightsError, match=r"only a sha256 prefix \(2 hex digits\).*weights fetch test_vit_prefix"
    ):
        build_encoder(entry.name, cache_dir=cache, img_size=32)

    def no_download(url, timeout):
        raise AssertionError("fetch_weights downloaded a file that is already there")

    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    assert fetch_weights(entry.name, cache) == path  # verifies the prefix, records the digest
    record = cache / "w.safetensors.sha256"
    assert record.read_text() == f"{digest}  w.safetensors\n"  # `sha256sum -c` format
    enc = build_encoder(entry.name, cache_dir=cache, img_size=32)
    assert enc.weights_sha256 == digest
    assert list_weights(cache).set_index("name").loc[entry.name, "recorded"]

    # Other weights crafted to share the published prefix pass the prefix check ...
    other = _tiny_vit(seed=1)
    nonce = 0
    while (
        hashlib.sha256(forged := _safetensors_bytes(other, str(nonce))).hexdigest()[:2]
        != entry.sha256
    ):
        nonce += 1
    path.write_bytes(forged)
    verify_sha256(path, entry.sha256)
    # ... but not the recorded full digest, at load time or at a later fetch.
    with pytest.raises(WeightsError, match=f"changed since its sha256 was recorded.*{digest}"):
        build_encoder(entry.name, cache_dir=cache, img_size=32)
    with pytest.raises(WeightsError, match="changed since its sha256 was recorded"):
        fetch_weights(entry.name, cache)
    # A full digest pinned by the caller is checked too (config `encoder.weights_sha256`).
    path.write_bytes(_safetensors_bytes(model))
    with pytest.raises(WeightsError, match="expected sha256 f{64}"):
        build_encoder(entry.name, cache_dir=cache, sha256="f" * 64, img_size=32)
    assert (
        build_encoder(entry.name, cache_dir=cache, sha256=digest, img_size=32).weights_sha256
        == digest
    )


def test_missing_weights_and_random_init_need_explicit_choice(tmp_path):
    with pytest.raises(WeightsError, match="eocausal weights fetch ssl4eo_l_oli_sr_moco"):
        build_encoder("ssl4eo_l_oli_sr_moco", cache_dir=tmp_path)
    with pytest.raises(WeightsError, match="random_weights=True"):
        build_encoder("test_vit", in_chans=3)
    with pytest.raises(WeightsError, match="take 7 bands"):
        build_encoder("ssl4eo_l_oli_sr_moco", cache_dir=tmp_path, in_chans=3)
    with pytest.raises(WeightsError, match="neither registered"):
        build_encoder("no_such_model", in_chans=3)
    enc = build_encoder("test_vit", in_chans=2, random_weights=True, img_size=32)
    assert enc.weights_sha256 is None and enc.embed_dim == 64


def test_registry_covers_ssl4eo_l_as_torchgeo_publishes_it():
    ssl = {n: get_weights_entry(n) for n in list_weights()["name"] if n.startswith("ssl4eo_l_")}
    assert len(ssl) == 10
    chans = {"tm_toa": 7, "etm_toa": 9, "etm_sr": 6, "oli_tirs_toa": 11, "oli_sr": 7}
    for name, e in ssl.items():
        key, method = name.removeprefix("ssl4eo_l_").rsplit("_", 1)
        assert method in ("moco", "simclr")
        assert e.in_chans == chans[key] == len(e.bands)
        assert e.arch == "vit_small_patch16_224"
        # torch.hub convention: the file name ends in -<sha256 prefix>.pth
        assert re.fullmatch(rf"vits16_landsat_{key}_{method}-([0-9a-f]{{8}})\.pth", e.filename)
        assert e.filename.endswith(f"-{e.sha256}.pth")
        assert e.url.endswith("/" + e.filename) and e.url.startswith("https://hf.co/torchgeo/")
    for e in map(get_weights_entry, list_weights()["name"]):
        assert e.recipe in RECIPES


def test_list_weights_reports_presence(tmp_path):
    (tmp_path / get_weights_entry("ssl4eo_l_etm_sr_moco").filename).write_bytes(b"x")
    table = list_weights(tmp_path).set_index("name")
    assert table.loc["ssl4eo_l_etm_sr_moco", "present"]
    assert not table.loc["ssl4eo_l_etm_sr_simclr", "present"]


def test_register_weights_checks_bands():
    with pytest.raises(WeightsError, match="2 bands but in_chans=3"):
        register_weights(WeightsEntry("bad", "test_vit", 3, ("a", "b"), "none", "f.pth", "ab", "u"))


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_fetch_weights_verifies_before_keeping(tmp_path, monkeypatch, saved_vit, test_entry):
    _, path = saved_vit
    payload = path.read_bytes()
    seen = []

    def fake_urlopen(url, timeout):
        seen.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    got = fetch_weights("test_vit_random", cache)
    assert seen == [test_entry.url] and got.read_bytes() == payload
    record = cache / f"{test_entry.filename}.sha256"
    assert record.read_text().split() == [_sha(path), test_entry.filename]
    enc = build_encoder("test_vit_random", cache_dir=cache, img_size=32)
    assert enc.weights_sha256 == _sha(path)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(b"junk"))
    with pytest.raises(WeightsError, match="corrupt or not the registered file"):
        fetch_weights("test_vit_random", cache, overwrite=True)
    assert sorted(p.name for p in cache.iterdir()) == [test_entry.filename, record.name]
    assert got.read_bytes() == payload and record.read_text().split()[0] == _sha(path)
