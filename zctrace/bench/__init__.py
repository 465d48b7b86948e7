"""`zctrace bench`: command.py (the options, plain cells, --suite's entry point); suites.py (the
suites' columns and runs), tables.py (their tables), output.py (JSON records, CSV, plot),
reference.py (the C reference sender), progress.py (the progress bar). A cell itself, the
workload run beside the probes, is zctrace/bench/cells.py."""
