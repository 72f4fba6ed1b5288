"""The learners' names, the auxiliary losses and the smallest frame the encoder takes, without torch.

The `taco` command checks a config against these before it imports torch (so `--help` and a bad
`key=value` answer at once); ``taco_rl.agents`` builds its learners on the same names
(``tests/test_cli.py`` checks that its tables list exactly these).
"""

from __future__ import annotations

ONLINE_AGENT_NAMES = ("drqv2", "sac")  # taco_rl.agents.AGENTS
OFFLINE_AGENT_NAMES = ("bc", "td3bc", "cql", "iql")  # taco_rl.agents.OFFLINE_AGENTS
AUX_KINDS = ("none", "curl", "taco")
MIN_IMAGE_SIZE = 15  # the encoder's 3x3 convolutions (stride 2, then 1, 1, 1) leave one pixel of a 15x15 frame
