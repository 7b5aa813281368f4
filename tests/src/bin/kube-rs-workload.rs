//! A workload written with kube-rs, as a controller would be: in-cluster
//! config (the pod's ServiceAccount token and CA, `KUBERNETES_SERVICE_HOST`),
//! JSON bodies, server-side apply and a watch. The end-to-end tests run it
//! inside a netns pod, where iptables sends it through the interceptor, and
//! compare what it printed with what was recorded.
//!
//!   kube-rs-workload <namespace>

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let namespace = std::env::args()
        .nth(1)
        .context("usage: kube-rs-workload <namespace>")?;
    let client = kube::Client::try_default()
        .await
        .context("in-cluster config")?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &namespace);

    let before = configmaps.list(&ListParams::default()).await?;
    let listed_at = before.metadata.resource_version.clone().unwrap_or_default();
    let made: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "rs-1", "labels": {"made-by": "kube-rs"}},
        "data": {"a": "1"}
    }))?;
    let created = configmaps.create(&PostParams::default(), &made).await?;
    let read = configmaps.get("rs-1").await?;
    let applied = configmaps
        .patch(
            "rs-1",
            &PatchParams::apply("kube-rs-workload"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"b": "2"}})),
        )
        .await?;
    // From the list's resourceVersion: the watch replays the create and the
    // apply, then ends at its timeout.
    let mut events = Vec::new();
    let mut stream = configmaps
        .watch(&WatchParams::default().timeout(1), &listed_at)
        .await?
        .boxed();
    while let Some(event) = stream.next().await {
        match event? {
            WatchEvent::Added(cm) => events.push(("ADDED", cm.metadata.name)),
            WatchEvent::Modified(cm) => events.push(("MODIFIED", cm.metadata.name)),
            WatchEvent::Deleted(cm) => events.push(("DELETED", cm.metadata.name)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => anyhow::bail!("watch error: {e}"),
        }
    }
    configmaps.delete("rs-1", &DeleteParams::default()).await?;
    let missing = configmaps.get_opt("rs-missing").await?;

    let version = |cm: &ConfigMap| cm.metadata.resource_version.clone();
    println!(
        "{}",
        json!({
            "created": version(&created),
            "read": version(&read),
            "applied": version(&applied),
            "applied_data": applied.data,
            "events": events,
            "missing": missing.is_none(),
        })
    );
    Ok(())
}
