"""Benchmark suites: suite files (spec), running them (run), scorecards, leaderboards, gates."""
