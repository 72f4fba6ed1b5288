"""Pick a headless OpenGL backend for MuJoCo before dm_control is imported.

MuJoCo and dm_control read ``MUJOCO_GL`` once, when their rendering modules are
imported, and a backend that fails to load can leave the process unusable for
another one (EGL, for example, sets ``PYOPENGL_PLATFORM`` for the whole process).
So each candidate is tried in a *subprocess* that renders one tiny model through
the same code path the environments use (``dm_control.mujoco.Physics.render``);
only the parent's ``os.environ["MUJOCO_GL"]`` is set, and the answer is cached
for the life of the process.  On a working machine this costs ~0.4 s once.

Also holds the check every env makes of its ``render_mode``/``render_size`` args.
"""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["RenderBackendError", "probe_render_backend", "CANDIDATE_BACKENDS", "check_render_args"]

# Tried in order when MUJOCO_GL is unset.  Both are headless: egl works with
# Mesa (llvmpipe on CPU) and with NVIDIA drivers; osmesa needs libOSMesa.
CANDIDATE_BACKENDS: tuple[str, ...] = ("egl", "osmesa")

# Seconds allowed per candidate; EGL initialisation on a cold GPU driver can take
# a few seconds, a hung driver should not hang the caller.
PROBE_TIMEOUT_S: float = 15.0

_PROBE_SCRIPT = """
from dm_control.mujoco import Physics
xml = '<mujoco><worldbody><light pos="0 0 1"/><geom size=".1"/></worldbody></mujoco>'
physics = Physics.from_xml_string(xml)
pixels = physics.render(height=8, width=8, camera_id=-1)
assert pixels.shape == (8, 8, 3), pixels.shape
physics.free()
print("RENDER_OK")
"""

_cached_backend: str | None = None


class RenderBackendError(RuntimeError):
    """No headless OpenGL backend could render a MuJoCo frame."""


def _try_backend(backend: str) -> str | None:
    """Render a 1-body model with ``MUJOCO_GL=backend`` in a subprocess.

    Returns None on success, else a one-line-ish description of the failure.
    """
    # Everything else (PYOPENGL_PLATFORM, MUJOCO_EGL_DEVICE_ID, ...) is inherited on
    # purpose: the probe must see the environment the parent will render in.
    env = dict(os.environ, MUJOCO_GL=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {PROBE_TIMEOUT_S:.0f} s"
    if proc.returncode == 0 and "RENDER_OK" in proc.stdout:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _error_message(failures: dict[str, str], explicit: bool) -> str:
    tried = "\n".join(f"  MUJOCO_GL={name}: {why}" for name, why in failures.items())
    head = (
        "The MUJOCO_GL backend you set cannot render"
        if explicit
        else "No headless OpenGL backend for MuJoCo works on this machine"
    )
    return (
        f"{head}. Tried:\n{tried}\n"
        "Fix one of:\n"
        "  - MUJOCO_GL=egl (Mesa on CPU or NVIDIA GPUs); on Debian/Ubuntu install "
        "libegl1 and libegl-mesa0 (apt-get install libegl1 libegl-mesa0)\n"
        "  - MUJOCO_GL=osmesa (software); install libosmesa6 (apt-get install libosmesa6)\n"
        "Set the variable before starting Python, e.g. `MUJOCO_GL=egl python ...`. "
        "The pure-numpy task point_reach needs no backend."
    )


def probe_render_backend() -> str:
    """Return a working MuJoCo GL backend name, setting ``MUJOCO_GL`` if unset.

    If ``MUJOCO_GL`` is set, only that backend is verified (the user chose it).
    Otherwise ``CANDIDATE_BACKENDS`` are tried in order and the first that renders
    is written to ``os.environ["MUJOCO_GL"]``.  Raises RenderBackendError with
    install instructions and every error seen when nothing works.
    """
    global _cached_backend
    if _cached_backend is not None:
        return _cached_backend

    render_module = sys.modules.get("dm_control._render")
    if render_module is not None and getattr(render_module, "BACKEND", None):
        # dm_control already chose (at its import); the env var can no longer change it.
        _cached_backend = str(render_module.BACKEND)
        return _cached_backend

    chosen = os.environ.get("MUJOCO_GL", "").strip()
    candidates = (chosen,) if chosen else CANDIDATE_BACKENDS
    failures: dict[str, str] = {}
    for backend in candidates:
        failure = _try_backend(backend)
        if failure is None:
            os.environ["MUJOCO_GL"] = backend
            _cached_backend = backend
            return backend
        failures[backend] = failure
    raise RenderBackendError(_error_message(failures, explicit=bool(chosen)))


def check_render_args(render_mode: str | None, render_size: int) -> None:
    """Raise ValueError on a render mode other than None/"rgb_array" or a size below 1."""
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    if int(render_size) < 1:
        raise ValueError(f"render_size must be a positive number of pixels, got {render_size}")
