"""Optional packages are recognised by the missing package's name; a broken project import is raised.

Real imports of real files: throwaway driver and backend modules are placed on the packages'
search path, one needing a package that does not exist, one importing a project module that
does not exist (the bug that must never be reported as "not installed").
"""

from __future__ import annotations

import pytest
import vla_runtime.drivers
import vla_runtime.runtime.backends
from vla_runtime.common.cli import import_optional, missing_dependency
from vla_runtime.common.errors import UserError
from vla_runtime.runtime.assemble import _make_device
from vla_runtime.runtime.backends import backend_class

NEEDS_PACKAGE = "import vla_no_such_vendor_sdk  # noqa\n"
BROKEN_PROJECT_IMPORT = "import vla_runtime.runtime.nonexistent_module  # noqa\n"


def test_only_a_missing_third_party_module_counts_as_not_installed():
    assert missing_dependency(ModuleNotFoundError("x", name="mujoco.egl")) == "mujoco"
    assert missing_dependency(ModuleNotFoundError("x", name="vla_runtime.runtime.gone")) is None
    assert missing_dependency(ImportError("cannot import name 'foo' from 'numpy'", name="numpy")) is None
    assert missing_dependency(ImportError("libnvinfer.so: cannot open shared object file")) is None


def test_import_optional_names_the_extra_or_raises_the_bug():
    with pytest.raises(UserError, match=r"vla_no_such_vendor_sdk is not installed; pip install 'vla-runtime\[sim\]'"):
        import_optional("vla_no_such_vendor_sdk", extra="sim")
    with pytest.raises(ModuleNotFoundError, match="nonexistent_module"):
        import_optional("vla_runtime.runtime.nonexistent_module", extra="sim")


@pytest.fixture
def extra_modules(tmp_path, monkeypatch):
    """Write modules into a folder that both packages also search."""
    for package in (vla_runtime.drivers, vla_runtime.runtime.backends):
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])

    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        return name

    return write


def test_driver_registry_tells_unknown_missing_and_broken_apart(extra_modules):
    with pytest.raises(UserError, match="arm driver 'nosuch' is unknown"):
        _make_device("arm", "nosuch", None, "robot.toml")
    needs = extra_modules("vla_test_needs_sdk", NEEDS_PACKAGE)
    with pytest.raises(UserError, match="needs vla_no_such_vendor_sdk"):
        _make_device("arm", needs, None, "robot.toml")
    broken = extra_modules("vla_test_broken_driver", BROKEN_PROJECT_IMPORT)
    with pytest.raises(ModuleNotFoundError, match="vla_runtime.runtime.nonexistent_module"):
        _make_device("arm", broken, None, "robot.toml")


def test_backend_registry_tells_unknown_missing_and_broken_apart(extra_modules):
    assert backend_class("nosuch") == "backend 'nosuch' is not part of this install"
    needs = extra_modules("vlatestneeds", NEEDS_PACKAGE)
    assert backend_class(needs) == f"backend {needs!r} is unavailable: vla_no_such_vendor_sdk is not installed"
    broken = extra_modules("vlatestbroken", BROKEN_PROJECT_IMPORT)
    with pytest.raises(ModuleNotFoundError, match="vla_runtime.runtime.nonexistent_module"):
        backend_class(broken)
