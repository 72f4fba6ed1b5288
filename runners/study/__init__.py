"""Many runs at once: sweeps (``sweep``), reports (``report``) and their statistics (``stats``,
rliable's definitions); the published numbers reports set runs beside (``published``, data in
``reference/``)."""
