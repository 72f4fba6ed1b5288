"""README's "Use TACO in your own learner" example runs as printed: the code block after its marker
comment is read from README.md and executed, so a change to the API that it does not follow fails here."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tested: tests/test_readme_example.py runs the next code block -->"


def example() -> str:
    text = README.read_text()
    assert text.count(MARKER) == 1, f"README.md must hold the marker exactly once: {MARKER}"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert match, "the marker must be followed by a ```python block"
    return match.group(1)


def test_readme_example_runs_and_trains_every_part():
    code = example()
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md (example)", "exec"), namespace)
    metrics, taco = namespace["metrics"], namespace["taco"]
    assert set(metrics) == {"curl_loss", "taco_loss", "reward_loss", "aux_loss"}
    assert all(math.isfinite(float(v)) for v in metrics.values())
    for name in ("critic_loss", "actor_loss", "loss"):
        assert math.isfinite(float(namespace[name].detach())), name
    # TACO's step reached the encoder and its own heads: both carry its gradients
    assert all(p.grad is not None for p in taco.head_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in namespace["encoder"].parameters())
