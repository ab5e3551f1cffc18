"""The Flow Builder worker: executes queued runs; also hosts the scheduler and reaper."""
