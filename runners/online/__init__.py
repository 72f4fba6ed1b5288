"""`taco train`: the online loop (``train``), its N-env form (``vector_loop``, ``episode_staging``) and
the env stepping that overlaps the updates (``stepper``)."""
