"""Reports: claims table, results tables and figures of an output directory."""

from lnlab.report.build import Report, build_report, collect
from lnlab.report.files import write_atomic

__all__ = ["Report", "build_report", "collect", "write_atomic"]
