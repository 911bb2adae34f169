"""Report layer: tables (markdown/JSON), figures (matplotlib PNG) and the self-contained HTML report.

Import the submodules directly: ``advsal.report.document``, ``advsal.report.charts``, ``advsal.report.figures``.
"""
