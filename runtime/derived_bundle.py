"""Write a derived bundle: the source's files with some graphs replaced, every hash recomputed.

Used for quantized bundles and TensorRT engine bundles alike. The new bundle is assembled in
a hidden staging folder beside the destination and renamed into place whole, so a robot can
never pick up a half-written bundle. `save_manifest` re-seals the manifest every time it is
written, so the derived bundle carries its own seal; the gate verdict, written last into the
manifest only, re-seals it again. The source's health sample describes the source's graphs, so
it is dropped and, for CPU bundles, recorded afresh from the new graphs.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime.bundle import Bundle, hash_tree, staged_directory
from vla_runtime.runtime.bundle import check_destination as _check_destination
from vla_runtime.runtime.health import HEALTH_DIR, record_sample
from vla_runtime.runtime.manifest import GraphSpec, Target, load_manifest, save_manifest


class PackError(RuntimeError):
    """The destination cannot take a bundle; one line with the fix."""


@dataclass(frozen=True)
class NewGraph:
    file: Path  # the new graph or engine on disk (copied into the bundle)
    rel: str  # its path inside the bundle
    precision: str  # manifest precision: fp32 | fp16 | int8 | int8-cpu
    format: str = "onnx"  # onnx | tensorrt
    spec: GraphSpec | None = None  # inputs and outputs of a role the source bundle does not have yet
    data_files: tuple[str, ...] = ()  # external-data files beside `file`, kept beside it in the bundle


def check_destination(out: Path, force: bool) -> None:
    _check_destination(out, force, error=PackError)


def write_derived_bundle(
    source: Bundle,
    out: Path,
    graphs: Mapping[str, NewGraph],
    extra_files: Mapping[str, Path] | None = None,
    target: Target | None = None,
    versions: Mapping[str, str] | None = None,
    model_notes: Mapping | None = None,
    force: bool = False,
) -> Path:
    """Copy `source` to `out`, swapping in `graphs` (role -> NewGraph) and adding `extra_files`."""
    out = out.expanduser().absolute()
    check_destination(out, force)
    if out == source.root:
        raise PackError(f"{out}: is the source bundle; write the new bundle to another --out")
    manifest = source.manifest
    replaced = {f for role in graphs if role in manifest.graphs
                for f in (manifest.graphs[role].file, *manifest.graphs[role].data_files)}
    with staged_directory(out) as staging:
        for rel in manifest.files:
            if rel not in replaced and not rel.startswith(f"{HEALTH_DIR}/"):
                _copy(source.root / rel, staging / rel)
        specs = dict(manifest.graphs)
        for role, new in graphs.items():
            _copy(new.file, staging / new.rel)
            base = manifest.graphs.get(role) or new.spec
            if base is None:
                raise PackError(f"graph {role!r} is new to this bundle; its NewGraph needs a spec")
            data = tuple(str(Path(new.rel).parent / name) for name in new.data_files)  # the graph names them
            for name, rel in zip(new.data_files, data, strict=True):
                _copy(new.file.parent / name, staging / rel)
            specs[role] = dataclasses.replace(
                base, file=new.rel, precision=new.precision, format=new.format, data_files=data
            )
        for rel, path in (extra_files or {}).items():
            _copy(path, staging / rel)
        updated = dataclasses.replace(
            manifest,
            graphs=specs,
            files=hash_tree(staging),
            gate=None,
            target=target or manifest.target,
            versions={**manifest.versions, **(versions or {})},
            model={**manifest.model, **(model_notes or {})},
        )
        save_manifest(updated, staging)
        if updated.target.kind == "cpu":
            record_sample(staging)
    return out


def set_gate(bundle_dir: Path, gate: dict) -> None:
    """Record the gate report in a written bundle's manifest (atomically replaced, re-sealed)."""
    save_manifest(dataclasses.replace(load_manifest(bundle_dir), gate=gate), bundle_dir)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
