"""Experiments that measure the ideas behind ebmssl (issue #10, docs/experiments.md).

Research code, outside the library: it imports ebmssl, and ebmssl never imports it (a test checks).
``tools/experiment.py`` runs an experiment config and ``tools/report.py`` renders a report from run
directories; both work from the repository root.

* :mod:`experiments.mutual_information`: MI bounds (InfoNCE, NWJ, WPC) against the closed-form
  mutual information of correlated Gaussians and an invertible (cubic) transform of them;
* :mod:`experiments.grid`: an experiment config expanded into training runs (dotted overrides),
  trained one after the other with :func:`ebmssl.training.run.run_training` and collected;
* :mod:`experiments.analysis`: the tables, correlations and plots of each training experiment;
* :mod:`experiments.report`: a Markdown report with PNG plots from any set of run directories.
"""
