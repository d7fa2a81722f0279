"""A local `tritonserver` on a workstation: the binary from the nvidia-pytriton wheel, in its own venv.

For trying a repository without NVIDIA's container, and for the tests and the load benchmark.
The wheel bundles Triton 2.51 with the python backend only (no onnxruntime backend), so it
serves `vla-export triton --graphs inprocess` repositories. The python backend needs
numpy<2 (with numpy 2 its outputs come back empty), hence a venv apart from the dev one, built
once and cached under $XDG_CACHE_HOME/vla-runtime/triton-venv. The stub process is linked
against the running Python's libpython, so LD_LIBRARY_PATH names this Python's lib folder, and
PATH starts with the venv's bin so the stub imports the venv's packages.

`python -m vla_runtime.export.triton_local` builds the venv ahead of time (CI can call it before
pytest); callers get the reason instead of the server when it cannot be built or started here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

# numpy<2 for the python backend; the rest is what vla_runtime.runtime needs to serve a bundle
VENV_PACKAGES = ("nvidia-pytriton==0.7.0", "tritonclient[grpc,http]", "onnxruntime", "numpy<2",
                 "opencv-python-headless<4.13", "tokenizers", "cryptography")
INSTALL_TIMEOUT_S = 1200
READY_TIMEOUT_S = 90


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vla-runtime"


def triton_venv() -> tuple[Path | None, str]:
    """(venv, "") once the venv is ready, else (None, why not); built on first use."""
    venv = cache_root() / "triton-venv"
    marker = venv / ".vla-runtime-ready"
    spec = " ".join(VENV_PACKAGES)
    if marker.is_file() and marker.read_text() == spec:
        return venv, ""
    if not sys.platform.startswith("linux"):
        return None, "the pytriton wheel's tritonserver is Linux x86-64 only"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True, capture_output=True,
                       timeout=INSTALL_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return None, f"could not build the Triton venv ({tail[0]})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"could not build the Triton venv ({exc})"
    marker.write_text(spec)
    return venv, ""


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _backends(venv: Path) -> Path:
    """The python backend with the stub for this Python, laid out as tritonserver expects."""
    pytriton = _site_packages(venv) / "pytriton" / "tritonserver"
    folder = venv / "triton-backends"
    python = folder / "python"
    stub = pytriton / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    if not (python / "triton_python_backend_stub").is_file():
        python.mkdir(parents=True, exist_ok=True)
        for f in (pytriton / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy2(f, python / f.name)
        shutil.copy2(stub / "triton_python_backend_stub", python / "triton_python_backend_stub")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_project(repo: Path, model: str = "policy") -> None:
    """Make this vla_runtime importable by the policy model (Triton puts its folder on sys.path), so the
    server runs exactly the code the robot runs without installing it into the venv."""
    import vla_runtime

    (repo / model / "1" / "vla_runtime").symlink_to(Path(vla_runtime.__file__).parent, target_is_directory=True)


class TritonServer:
    """tritonserver on loopback with free ports; always killed (its whole process group) on stop()."""

    def __init__(self, venv: Path, repo: Path, log: Path, extra_args: tuple[str, ...] = (),
                 http_port: int | None = None, grpc_port: int | None = None):
        self.venv, self.repo, self.log_path = venv, repo, log
        self.extra_args = extra_args  # more tritonserver flags (TLS, restricted protocols)
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()  # None: any free port
        self.proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> str:
        """"" once ready, else why it did not come up (the log's last lines)."""
        site = _site_packages(self.venv)
        binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = f"{sysconfig.get_config_var('LIBDIR')}:{site / 'nvidia_pytriton.libs'}"
        env["OMP_NUM_THREADS"] = "1"
        cmd = [str(binary), "--model-repository", str(self.repo), "--backend-directory", str(_backends(self.venv)),
               "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
               "--allow-metrics", "false", "--disable-auto-complete-config", "--exit-timeout-secs", "2",
               *self.extra_args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"tritonserver exited ({self.proc.returncode}): {self.log_tail()}"
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return ""
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        return f"tritonserver not ready after {READY_TIMEOUT_S} s: {self.log_tail()}"

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return " | ".join(line for line in text if line.startswith(("E", "error")))[-400:] or " | ".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crashed or unplugged server looks to a robot."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def main(argv: list[str] | None = None) -> int:
    """Serve a repository in the foreground until Ctrl-C (building the venv first when needed)."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m vla_runtime.export.triton_local",
                                 description="serve a `vla-export triton --graphs inprocess` repository on loopback "
                                             "with the nvidia-pytriton wheel's tritonserver")
    ap.add_argument("repo", nargs="?", help="repository folder (omit: only build the venv)")
    ap.add_argument("--model", default="policy", help="the policy model's name (default policy)")
    ap.add_argument("--http-port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default 8000)")
    ap.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on 127.0.0.1 (default 8001)")
    args = ap.parse_args(argv)
    venv, why = triton_venv()
    if venv is None:
        print(f"error: triton venv unavailable: {why}", file=sys.stderr)
        return 1
    print(f"triton venv: {venv}")
    if args.repo is None:
        return 0
    repo = Path(args.repo)
    if not (repo / args.model / "1" / "vla_runtime").exists():
        link_project(repo, args.model)
    server = TritonServer(venv, repo, Path(tempfile.gettempdir()) / "vla-runtime-tritonserver.log",
                          http_port=args.http_port, grpc_port=args.grpc_port)
    why = server.start()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    print(f"serving {repo} at {server.grpc_url} and {server.http_url} (log {server.log_path}); Ctrl-C stops it")

    def on_term(signum, frame):
        raise KeyboardInterrupt  # SIGTERM / SIGHUP stop the server too, not only Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
