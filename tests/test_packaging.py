"""`pip install .` builds a package whose `import operad` works from anywhere."""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_non_editable_install_imports_from_a_temporary_directory():
    with tempfile.TemporaryDirectory() as target, tempfile.TemporaryDirectory() as src:
        # build from a copy so that no build/ folder lands in the checkout
        shutil.copytree(ROOT, os.path.join(src, "operad"),
                        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "runs", "data",
                                                      "__pycache__", ".hypothesis"))
        out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", target, os.path.join(src, "operad")], capture_output=True, text=True)
        if out.returncode != 0 and "setuptools" in out.stderr:
            pytest.skip("setuptools is not available for an offline build")
        assert out.returncode == 0, out.stderr
        for sub in ("operators", "models", "theory", "experiments"):
            assert os.path.isdir(os.path.join(target, "operad", sub)), sub
        assert not os.path.exists(os.path.join(target, "operad", "tests"))
        code = "import operad, operad.ops, operad.verify; from operad import ops, Field; " \
               "print(operad.__file__); print(operad.cost(ops.conv(8) >> ops.relu(), Field(3)))"
        run = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": target})
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(os.path.join(target, "operad"))
        assert "Cost(params=224, macs=216*H*W)" in run.stdout
