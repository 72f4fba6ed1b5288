"""The run plumbing every room shares: configuration (``config``), the run directory and its lock
(``rundir``), what every run does (``run``: seeding, the learner, evaluation, logs, checkpoints),
checkpoints (``checkpoint``), the frame-once replay (``replay``), logs (``logger``, ``wandb_log``),
the non-finite guard (``guard``), env worker processes (``workers``), evaluation episodes
(``evaluation``) and the CPU allocator setting (``cpu_memory``). Nothing here imports the rooms above."""
