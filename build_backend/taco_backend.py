"""The project's build backend: setuptools' own, plus one file in every wheel it builds.

gymnasium 1.x reads no plugin entry points, so ``gymnasium.make("taco/<task>-v0")`` in a process that
never imported taco_rl needs code that runs at interpreter start-up. Each wheel (regular and
editable) therefore also holds ``taco_rl-gymnasium.pth``, one line that imports
``taco_rl._gymnasium_hook``: that module only places a finder on ``sys.meta_path``, which registers
the ids right after gymnasium itself is first imported. pip records the file in the wheel's RECORD
and removes it on uninstall like any other.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks passed through unchanged)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

PTH_NAME = "taco_rl-gymnasium.pth"
PTH_TEXT = b"import taco_rl._gymnasium_hook\n"


def _with_pth(wheel_dir: str, name: str) -> str:
    path = os.path.join(wheel_dir, name)
    digest = base64.urlsafe_b64encode(hashlib.sha256(PTH_TEXT).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(path + ".part", "w", zipfile.ZIP_DEFLATED) as dst:
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for info in src.infolist():
            if info.filename != record:
                dst.writestr(info, src.read(info))
        dst.writestr(PTH_NAME, PTH_TEXT)
        dst.writestr(src.getinfo(record), src.read(record) + f"{PTH_NAME},sha256={digest},{len(PTH_TEXT)}\n".encode())
    os.replace(path + ".part", path)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _with_pth(wheel_directory, _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _with_pth(wheel_directory, _setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
