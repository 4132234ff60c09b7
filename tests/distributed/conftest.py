"""Prints what tests/distributed measured (bounds, latencies) at the end of
the run, past pytest's output capture, so that ctest's log shows it."""


def pytest_terminal_summary(terminalreporter, config):
    lines = getattr(config, "_dyn_dist_report", None)
    if lines:
        terminalreporter.section("distributed: measured")
        for line in lines:
            terminalreporter.write_line(line)
