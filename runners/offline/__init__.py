"""`taco offline`: a learner trained on a fixed dataset and evaluated in the live env (``train``)."""
