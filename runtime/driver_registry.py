"""Drivers found by naming convention, and the robot-file keys each one declares.

`[arm] driver = "ur-rtde"` is the module `vla_runtime.drivers.ur_rtde`, which provides
`make_arm(spec)` and `ARM_OPTIONS` (a dataclass whose fields are the driver's own keys);
likewise `make_gripper`/`GRIPPER_OPTIONS`. Cameras live one package down:
`[cameras.NAME] kind = "v4l2"` is `vla_runtime.drivers.cameras.v4l2` with `make_camera` and
`CAMERA_OPTIONS`. The simulated robot ("sim") is built by the runtime itself; its keys are
declared beside it in runtime/sim. A name that matches nothing is refused with the nearest
existing driver suggested.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

from vla_runtime.common.cli import import_optional, missing_dependency
from vla_runtime.common.errors import UserError
from vla_runtime.common.typed_table import suggest

ROLES = ("arm", "gripper", "camera")
PACKAGES = {"arm": "vla_runtime.drivers", "gripper": "vla_runtime.drivers", "camera": "vla_runtime.drivers.cameras"}
SIM = "sim"  # the built-in MuJoCo robot and its rendered camera
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class DriverLookupError(ValueError):
    """No driver of that name for that role, or its optional package is missing."""


def driver_module(role: str, name: str) -> ModuleType:
    """The module implementing `name` for `role`; DriverLookupError with a suggestion otherwise."""
    if role not in ROLES:
        raise ValueError(f"unknown driver role {role!r}; expected one of {ROLES}")
    module_name = f"{PACKAGES[role]}.{name.replace('-', '_')}"
    if not _NAME.fullmatch(name):
        module_name = ""  # not a module name at all: reported like any unknown driver
    try:
        if not module_name:
            raise ModuleNotFoundError(name="")
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = missing_dependency(exc)
        if exc.name != module_name and missing is not None:
            raise DriverLookupError(f"{role} driver {name!r} needs {missing}; pip install {missing}") from None
        if exc.name != module_name:
            raise
        module = None
    if module is None or not hasattr(module, f"make_{role}"):
        names = available(role)
        raise DriverLookupError(
            f"{role} driver {name!r} is unknown{suggest(name, names)} (available: {', '.join(names)})"
        )
    return module


def options_class(role: str, name: str) -> type | None:
    """The dataclass declaring the driver's robot-file keys; None when it takes none."""
    if name == SIM:
        return _sim_options(role)
    return getattr(driver_module(role, name), f"{role.upper()}_OPTIONS", None)


def available(role: str) -> list[str]:
    """Driver names for `role`: "sim" plus every module of the package providing make_<role>."""
    package = importlib.import_module(PACKAGES[role])
    names = [SIM]
    for info in pkgutil.iter_modules(package.__path__):
        try:
            module = importlib.import_module(f"{PACKAGES[role]}.{info.name}")
        except ImportError as exc:
            if missing_dependency(exc) is None:
                raise  # a broken module of ours, not an uninstalled option
            continue
        if hasattr(module, f"make_{role}"):
            names.append(info.name.replace("_", "-"))
    return sorted(names)


def _sim_options(role: str) -> type | None:
    if role != "camera":
        return None  # the sim arm and gripper have no keys of their own
    try:
        import_optional("vla_runtime.runtime.sim.world", extra="sim")  # MuJoCo
    except UserError as exc:
        raise DriverLookupError(f"the simulated camera: {exc}") from None
    from vla_runtime.runtime.sim.robot import SimCameraOptions

    return SimCameraOptions
