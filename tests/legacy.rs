//! legacy tests.
