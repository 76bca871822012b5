"""Durable run folders: checked before a search starts, streamed to disk unit by unit,
resumable after a kill, and shardable across processes or a Ray cluster.

:mod:`mmargin.durable.folder` checks and claims an output folder, :mod:`mmargin.durable.journal`
appends finished units to it and assembles the final files, :mod:`mmargin.durable.execute`
runs a task into a folder (locally or through :mod:`mmargin.durable.ray_executor`),
:mod:`mmargin.durable.progress` reports progress, :mod:`mmargin.durable.names` names per-sample
files.
"""
