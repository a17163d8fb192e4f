"""Quality: contract checks on staging, the DQD check catalogue on the CDM, results, dashboard."""
