"""Readers and writers of published offline-RL layouts, one module per format.

Each reader scans its files cheaply first (:class:`~taco_rl.runners.data.formats.common.Plan`: slot count, frame
shape, action size), then streams episodes into a :class:`~taco_rl.runners.data.datasets.DatasetWriter` of
exactly that size, which fills the native layout's files episode by episode. Readers never
unpickle, cast dtypes on load, ignore keys they do not use, and reject malformed input with a
:class:`~taco_rl.runners.data.datasets.DatasetError` naming the file and the key.
"""
