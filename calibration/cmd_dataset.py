"""`vla-export dataset REC... --out DIR`: flight recordings -> a LeRobot v3.0 dataset for fine-tuning.

Needs no torch: the recordings are read with `mcap`, the dataset written with pyarrow.
"""

from __future__ import annotations

from vla_runtime.common.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("dataset", help="write recordings (.mcap) as a LeRobot v3.0 dataset")
    p.add_argument("recordings", nargs="+", metavar="REC",
                   help="episodes recorded with `vla-runtime --record DIR` (.mcap files or folders of them)")
    p.add_argument("--out", required=True, metavar="DIR", help="new dataset folder")
    p.add_argument("--camera", help="recorded camera to export (default: the first)")
    p.set_defaults(func=cmd_dataset)


def cmd_dataset(args) -> int:
    import pyarrow  # noqa: F401 - a missing pyarrow disables this command with its install line
    from vla_runtime.calibration.lerobot_writer import DatasetWriteError, write_dataset
    from vla_runtime.runtime.recording import Recording, RecordingError, find_recordings

    try:
        recordings = [Recording(p) for p in find_recordings(args.recordings)]
        summary = write_dataset(recordings, args.out, args.camera)
    except (RecordingError, DatasetWriteError) as exc:
        raise UserError(str(exc)) from None
    cut = [r.path.name for r in recordings if not r.complete]
    if cut:
        print(f"note: {len(cut)} recording(s) were cut short and are exported up to their last complete chunk")
    print(summary.line())
    return 0
