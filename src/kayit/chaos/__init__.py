"""kayit chaos: a real cluster under client load and injected faults, judged by a
linearizability checker (Jepsen's method, in Python)."""
