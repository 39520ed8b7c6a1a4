"""``mice-bench report``: regenerate every table and figure of ``report/`` from ``results/``.

* :mod:`.latency_io` / :mod:`.effectiveness_io` adapters from results files to flat records
  (the only modules that know those file layouts);
* :mod:`.tables` format-neutral tables rendered to Markdown and LaTeX (booktabs);
* :mod:`.latency_section` / :mod:`.effectiveness_section` tables and figures;
* :mod:`.build` :func:`build_report`; :mod:`.cli` the ``report`` sub-command.
"""

from .build import ReportResult, build_report  # noqa: F401
