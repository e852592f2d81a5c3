"""Benchmark of the linearizability checker: `python -m workloads.bench_checker [DATA_DIR]`.

Times every shared Jepsen history, a generated many-client key-value pair and mutants that must
fail (see `mutants`), so a checker that stalls on failing histories shows at once.
"""
