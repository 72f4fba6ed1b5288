"""Registers ``taco/<task>-v0`` with gymnasium in every process of an environment holding taco-rl.

Imported at interpreter start-up by the installed ``taco_rl-gymnasium.pth`` (see
build_backend/taco_backend.py: gymnasium 1.x has no plugin entry points). Until gymnasium is
imported this costs one finder on ``sys.meta_path``; right after gymnasium's own import finishes,
the finder removes itself and registers the ids (about 10 ms: taco_rl.envs imports neither
dm_control nor torch). Nothing here may raise: a failure is a warning, and ``import taco_rl.envs``
registers the ids again anyway.
"""

from __future__ import annotations

import sys
import warnings


def _register() -> None:
    if "taco_rl.envs" in sys.modules:  # taco_rl.envs is being imported: it registers the ids itself
        return
    try:
        from taco_rl.envs.registry import register_gymnasium

        register_gymnasium()
    except Exception as err:  # noqa: BLE001  (start-up code: never break the user's import)
        warnings.warn(f"taco_rl: could not register the taco/<task>-v0 gymnasium ids: {err!r}", stacklevel=2)


class _AfterGymnasium:
    """A meta-path finder that wraps gymnasium's loader so that ``_register`` runs after it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "gymnasium":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if loader is None or exec_module is None:
            return spec

        def exec_then_register(module):
            exec_module(module)
            self.remove()
            _register()

        # wraps this loader instance's method on purpose (mypy forbids assigning to a method)
        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


if "gymnasium" in sys.modules:
    _register()
elif not any(isinstance(f, _AfterGymnasium) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterGymnasium())
