"""Speed checks as ratios (make bench): see benchmarks/report.py."""
