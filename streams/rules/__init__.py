"""The monitoring rules of RULES.md as pure functions: facts + plan + clock -> alerts.

Nothing here touches Kafka, faust or the wall clock, so every rule is a plain unit
test and the streaming engine is checked against the in-memory oracle
(`oracle.run_scenario`).
"""
