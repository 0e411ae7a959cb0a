//! Example client programs live in `src/bin`.
