import subprocess
import sys


def test_outcome_never_imports_torch():
    code = "import sys, eocausal.outcome; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
