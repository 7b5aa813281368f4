//! The central service: ingests records, and computes API coverage and provenance.
//!
//! Built in its own issue; the workspace carries it from the start so that
//! every part grows in the same place, under the same lints and CI.
