"""The benchmark engine: the run configuration, the plan of jobs, their cache and executor, and the method plug-ins."""
