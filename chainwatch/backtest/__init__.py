"""Plan backtests: replay a history once per SLA plan and compare (issue 12, docs/backtest.md)."""
