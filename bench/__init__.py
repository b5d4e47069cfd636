"""pg2neo benchmarks (make bench)."""
