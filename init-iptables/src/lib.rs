//! Redirects a pod's outbound TCP to the apiserver into the interceptor.
//!
//! Built in its own issue; the workspace carries it from the start so that
//! every part grows in the same place, under the same lints and CI.
