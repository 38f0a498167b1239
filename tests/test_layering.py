"""House rules that a green test suite could otherwise hide."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["eocausal", "eocausal.estimate", "eocausal.evaluate", "eocausal.features", "eocausal.debias",
     "eocausal.config", "eocausal.report", "eocausal.outcome", "eocausal.maps", "eocausal.trials"],
)
def test_causal_stages_never_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} imported torch"


def test_imagery_never_imports_econml():
    code = "import sys, eocausal.imagery, eocausal.units; print('econml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_public_api_resolves():
    import eocausal

    for name in eocausal.__all__:
        assert getattr(eocausal, name) is not None, name


def test_shared_checks_splitting_and_writes_are_light():
    code = (
        "import sys, eocausal.validation, eocausal.splitting, eocausal.atomic; "
        "print(sorted(m for m in ('econml', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
