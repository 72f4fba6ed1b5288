"""Readers and writers of published offline-RL layouts, one module per format.

Each reader scans its files cheaply first (:class:`~runners.formats.common.Plan`: slot count, frame
shape, action size), then streams episodes into a :class:`~runners.replay.Replay` of exactly that
size, which :func:`runners.datasets.write_dataset` stores in the native layout. Readers never
unpickle, cast dtypes on load, ignore keys they do not use, and reject malformed input with a
:class:`~runners.datasets.DatasetError` naming the file and the key.
"""
