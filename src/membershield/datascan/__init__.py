"""Scanning a training table before a model sees it: personal data per column (:mod:`.detect`), sensitivity
tiers (:mod:`.tiers`), rare combinations of quasi-identifiers (:mod:`.lowk`), exact and near copies
(:mod:`.duplicates`), retention (:mod:`.retention`), the policy file (:mod:`.policy`), the scan itself and
its checks (:mod:`.scan`) and its page (:mod:`.html`). ``scan.json`` is the document :func:`scan_table`
returns.
"""

from membershield.datascan.html import render_scan, write_scan_html
from membershield.datascan.policy import DataPolicy, load_policy, parse_policy
from membershield.datascan.scan import scan as scan_table

__all__ = ["DataPolicy", "load_policy", "parse_policy", "render_scan", "scan_table", "write_scan_html"]
