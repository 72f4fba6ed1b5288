"""Learners and auxiliary modules: pure torch, no files, envs or loggers."""
from .drqv2 import DrQV2
from .learner import AUX_KINDS, PixelActorCritic
from .sac import SAC
from .taco import TACO

AGENTS = {"drqv2": DrQV2, "sac": SAC}

__all__ = ["AGENTS", "AUX_KINDS", "DrQV2", "PixelActorCritic", "SAC", "TACO"]
