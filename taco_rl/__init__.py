"""taco-rl: TACO on DrQ-v2 and SAC from pixels, offline learners, sweeps and reports.

One import package: ``taco_rl.agents`` (learners), ``taco_rl.envs`` (pixel envs),
``taco_rl.runners`` (the ``taco`` command, replay, datasets, sweeps, reports) and ``taco_rl.sb3``
(the stable-baselines3 adapter). In the repository these are the top-level folders ``agents/``,
``envs/``, ``runners/`` and ``sb3/``; an installed wheel holds them under ``taco_rl/``
(pyproject.toml maps them). Run from a source checkout (``PYTHONPATH=<checkout>``, or an editable
install), this package finds them beside itself.

For a learner of your own: ``from taco_rl import TacoLoss, WindowSampler`` (TACO from plain tensors and
K-step windows from plain arrays; ``taco_rl.torchrl`` has a torchrl LossModule, extra ``torchrl``).
They load on first use: ``import taco_rl`` stays light (every Python start of an environment where
taco-rl is installed imports it, through the gymnasium start-up hook).
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
import typing as _typing

if _typing.TYPE_CHECKING:
    from taco_rl.agents.taco_loss import TacoLoss
    from taco_rl.runners.core.windows import WindowSampler

__version__ = "0.1.0"

_here = _os.path.dirname(_os.path.abspath(__file__))
_checkout = _os.path.dirname(_here)
if (
    not _os.path.isdir(_os.path.join(_here, "agents"))
    and _os.path.isfile(_os.path.join(_checkout, "pyproject.toml"))
    and _os.path.isfile(_os.path.join(_checkout, "agents", "__init__.py"))
):
    # source checkout: the subpackages are the checkout's top-level folders
    __path__.append(_checkout)  # noqa: F821

_LAZY = {"TacoLoss": "taco_rl.agents.taco_loss", "WindowSampler": "taco_rl.runners.core.windows"}
__all__ = ["TacoLoss", "WindowSampler", "__version__"]


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'taco_rl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
