//! Pipelines end to end through the public API.
