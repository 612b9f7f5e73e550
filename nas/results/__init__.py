"""The facts every upper room shares: trial records, Pareto maths, the run-folder layout, metric names.

Low in the import graph (numpy only; Optuna's types at most): search, tracking, dashboards and
export all read a search through these modules, so each fact is spelled once.

- :mod:`nas.results.records`: a trial as read back from the Optuna study (``TrialRecord``, states).
- :mod:`nas.results.pareto`: non-dominated sort, crowding, hypervolume (and its history), knee.
- :mod:`nas.results.layout`: where a search keeps its files (``<root>/<name>/trials/<n>/...``).
- :mod:`nas.results.metrics`: the names of what a trial reports.
"""
