//! The mutating admission webhook that adds init-iptables and the interceptor to opted-in workloads, and certifies interceptors.
//!
//! Built in its own issue; the workspace carries it from the start so that
//! every part grows in the same place, under the same lints and CI.
