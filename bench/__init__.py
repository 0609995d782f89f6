"""Benchmarks of streamflow against hand-written asyncio and aiokafka pipelines."""
