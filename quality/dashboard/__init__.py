"""The QA dashboard: self-contained offline HTML pages built from the ``results`` schema.

``build_dashboard(con, out_dir)`` writes ``index.html`` (every site's latest run, all
runs, row-count trends) and one ``run-<id>.html`` per run (checks, contracts,
rejects, flags, mapping coverage, unmapped codes, row counts). Every page is a
single file with its styles, data and the vendored Chart.js inlined: it opens from
disk and loads nothing from the network.
"""

from quality.dashboard.build import build_dashboard, run_page_name

__all__ = ["build_dashboard", "run_page_name"]
