"""HTML reports with plots."""

from assay.reports.html import write_report

__all__ = ["write_report"]
