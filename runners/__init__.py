"""Everything that moves data, by concern: ``cli`` (the `taco` command) on top of ``online``,
``offline``, ``data``, ``study`` and ``bench``, all on the shared plumbing in ``core``."""
