"""What the load generators send and read, shared by loadtest/ (Locust) and benchmarks/:
prompts of exact token lengths (`workload.prompts`), SSE streams with their timings
(`workload.sse`) and the engines' own token counters (`workload.engine_metrics`)."""
