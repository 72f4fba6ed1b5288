"""Many runs at once: sweeps (``sweep``), reports (``report``) and their statistics (``stats``,
rliable's definitions)."""
