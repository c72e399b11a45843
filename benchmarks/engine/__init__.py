"""The benchmark engine: run configuration, jobs, plan, cache, executor, loading, aggregation and method plug-ins."""
