//! Work in progress (issue 8).
