//! The harness of the end-to-end tests. Every test stands on the real control
//! plane that `hack/cluster` runs on this machine: [`Cluster::shared`] starts it
//! once per test run, or reuses one that is already up, and each test works in
//! a [`TestNamespace`] of its own. A [`NetnsPod`] is a pod as iptables and an
//! in-cluster client see one.

pub mod aggregator;
pub mod audit_log;
mod binaries;
pub mod browser;
pub mod certify;
pub mod chart;
mod cluster;
pub mod collector;
pub mod intercepted;
mod namespace;
mod pod;
pub mod postgres_crd;
mod server;
pub mod tls;
mod wait;

pub use binaries::workspace_binary;
pub use cluster::{Cluster, CommandOutput, repo_root};
pub use namespace::TestNamespace;
pub use pod::NetnsPod;
pub use server::TestServer;
pub use wait::wait_until;
