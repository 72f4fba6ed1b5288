"""Offline datasets: the native format (``datasets``), the published formats (``formats/``), and the
`taco data` command (``cli``) with what it calls: ``collect`` (with ``rollout`` and
``collect_workers``), ``from_run`` and ``convert`` (import, concat)."""
