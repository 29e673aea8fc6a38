"""One import name (issue 24): the wheel installs harness/, methods/ and dashboards/ as
nirbench.harness, nirbench.methods and nirbench.dashboards, and nothing at the top level, so
nirbench lives beside any other project that ships a ``methods`` or ``harness`` package."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "harness": "nirbench.harness",
    "methods": "nirbench.methods",
    "dashboards": "nirbench.dashboards",
}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        FOLDERS[init.relative_to(ROOT).parts[0]]
        + "".join("." + part for part in init.parent.relative_to(ROOT).parts[1:])
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert found == listed, (
        f"pyproject.toml [tool.setuptools] packages differs from the folders: "
        f"missing {sorted(found - listed)}, stale {sorted(listed - found)}"
    )


def test_wheel_installs_beside_a_package_named_methods(tmp_path):
    """Build the wheel, install it (without its dependencies, which come from this venv through
    a .pth file: a clean venv would download 5 GB of torch) into a clean venv that already holds
    a package named ``methods``, and import both."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    wheel = next(dist.glob("nirbench-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"harness", "methods", "dashboards"}.isdisjoint(tops), tops
    assert "nirbench" in tops

    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The other project's package named `methods`, installed first.
    (purelib / "methods").mkdir()
    (purelib / "methods" / "__init__.py").write_text("OTHER_PROJECT = True\n")
    # nirbench's dependencies from this venv; .pth lines are appended after the clean venv's own
    # site-packages, and .pth files inside them are not processed (so this venv's editable
    # nirbench stays invisible).
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(purelib),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    code = (
        "import methods, nirbench.methods, nirbench.harness.config, nirbench.dashboards.report\n"
        "assert methods.OTHER_PROJECT\n"
        "assert nirbench.methods.METHODS.names()\n"
        f"assert nirbench.methods.__file__.startswith({str(purelib)!r}), "
        "nirbench.methods.__file__\n"
        "from nirbench.harness.cli.main import main\n"
        "import sys; sys.argv = ['nirbench', '--help']; main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "usage: nirbench" in out.stdout
