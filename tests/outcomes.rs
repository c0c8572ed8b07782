//! outcomes tests.
