"""TACO for stable-baselines3 users: ``TacoSAC`` trains with SB3's own ``learn()``, callbacks, logger
and ``save``/``load``.

What it adds to SB3's SAC (stable_baselines3.SAC):

- the suite's pixel encoder (agents/nets.py ``Encoder``) as the default features extractor, owned by
  the critic as in DrQ/DrQ-v2: the critic loss and the TACO loss train it, the actor reads its features
  detached; random-shift augmentation (agents/nets.py ``RandomShift``) on every encoded batch;
- the suite's TACO module (agents/taco.py: InfoNCE between (z_t, a_t..a_{t+K-1}) and z_{t+K}, plus its
  CURL and reward terms) stepped after each SAC update by its own Adam, and TACO's action encoder
  (agents/nets.py ``ActionEncoder``) shared with the critic, which scores Q(z, tok(a));
- ``TacoReplayBuffer``: SB3's ReplayBuffer plus K-step action sequences and the observation K steps
  ahead, never across an episode end or between envs, timeouts bootstrapped, each frame stored once.

    import gymnasium as gym                  # taco/<task>-v0 are registered with gymnasium on install
    from taco_rl.sb3 import TacoSAC
    model = TacoSAC("CnnPolicy", gym.make("taco/cheetah_run-v0"), taco_k=3, buffer_size=100_000, verbose=1)
    model.learn(100_000, callback=[...], progress_bar=True)
    model.save("m.zip"); TacoSAC.load("m.zip")

"CnnPolicy" is ``TacoSACPolicy`` (any CHW uint8 frames the encoder takes, 32x32 and 84x84 alike).
This package is the only place the suite imports stable_baselines3 (the ``sb3`` extra).
"""

from taco_rl.sb3.buffer import TacoReplayBuffer, TacoReplayBufferSamples
from taco_rl.sb3.policy import SuiteEncoder, TacoActor, TacoCritic, TacoSACPolicy
from taco_rl.sb3.sac import TacoSAC

__all__ = [
    "TacoSAC",
    "TacoSACPolicy",
    "TacoReplayBuffer",
    "TacoReplayBufferSamples",
    "SuiteEncoder",
    "TacoActor",
    "TacoCritic",
]
