"""Learners and auxiliary modules: pure torch, no files, envs or loggers."""

from .bc import BC
from .cql import CQL
from .drqv2 import DrQV2
from .iql import IQL
from .learner import AUX_KINDS, PixelActorCritic
from .sac import SAC
from .taco import TACO
from .td3bc import TD3BC

AGENTS: dict[str, type[PixelActorCritic]] = {"drqv2": DrQV2, "sac": SAC}  # online learners
# learners on a fixed dataset
OFFLINE_AGENTS: dict[str, type[PixelActorCritic]] = {"bc": BC, "td3bc": TD3BC, "cql": CQL, "iql": IQL}

__all__ = [
    "AGENTS",
    "AUX_KINDS",
    "BC",
    "CQL",
    "DrQV2",
    "IQL",
    "OFFLINE_AGENTS",
    "PixelActorCritic",
    "SAC",
    "TACO",
    "TD3BC",
]
