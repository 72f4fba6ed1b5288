"""`taco bench`: update, sampling and memory figures (``bench``) and whole-run figures (``whole_run``)."""
