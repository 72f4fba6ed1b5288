"""taco-rl: TACO on DrQ-v2 and SAC from pixels, offline learners, sweeps and reports.

One import package: ``taco_rl.agents`` (learners), ``taco_rl.envs`` (pixel envs),
``taco_rl.runners`` (the ``taco`` command, replay, datasets, sweeps, reports) and ``taco_rl.sb3``
(the stable-baselines3 adapter). In the repository these are the top-level folders ``agents/``,
``envs/``, ``runners/`` and ``sb3/``; an installed wheel holds them under ``taco_rl/``
(pyproject.toml maps them). Run from a source checkout (``PYTHONPATH=<checkout>``, or an editable
install), this package finds them beside itself.
"""

from __future__ import annotations

import os as _os

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
