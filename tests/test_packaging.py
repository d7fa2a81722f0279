"""The install ships every sub-package under the vla_runtime namespace and nothing generic."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP = ("export", "runtime", "drivers", "calibration")


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {"vla_runtime"} | {
        "vla_runtime." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert all(name == "vla_runtime" or name.startswith("vla_runtime.") for name in listed)
