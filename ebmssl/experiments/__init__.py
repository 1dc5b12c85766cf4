"""Experiments that measure the ideas behind ebmssl (issue #10, docs/experiments.md).

* :mod:`ebmssl.experiments.mutual_information`: MI bounds (InfoNCE, NWJ, WPC) against the closed-form
  mutual information of correlated Gaussians and an invertible (cubic) transform of them;
* :mod:`ebmssl.experiments.grid`: an experiment config expanded into training runs (dotted overrides),
  trained one after the other with :func:`ebmssl.training.run.run_training` and collected;
* :mod:`ebmssl.experiments.analysis`: the tables, correlations and plots of each training experiment;
* :mod:`ebmssl.experiments.report`: a Markdown report with PNG plots from any set of run directories.
"""
