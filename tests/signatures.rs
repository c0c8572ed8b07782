//! signatures tests.
