//! Kubernetes Events that tell a user why an opted-in pod was left alone.
//! Written off the admission path, so a slow apiserver never slows a pod.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::Value;
use std::sync::Mutex;

pub const REASON: &str = "ApiwitnessSkipped";

/// One skip, as it will be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub namespace: String,
    /// The object the Event is about: the pod where it has a name already,
    /// or else its owner (a pod made from generateName has no name yet).
    pub kind: String,
    pub name: String,
    pub uid: Option<String>,
    pub api_version: String,
    pub message: String,
}

impl Skip {
    pub fn about(namespace: &str, pod: &Value, reason: &str, message: &str) -> Skip {
        let meta = &pod["metadata"];
        let owner = meta["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["controller"] == Value::Bool(true)));
        let text = |v: &Value| v.as_str().map(str::to_string);
        let (kind, name, uid, api_version) = match (text(&meta["name"]), owner) {
            (Some(name), _) => ("Pod".into(), name, text(&meta["uid"]), "v1".into()),
            (None, Some(o)) => (
                text(&o["kind"]).unwrap_or_default(),
                text(&o["name"]).unwrap_or_default(),
                text(&o["uid"]),
                text(&o["apiVersion"]).unwrap_or_default(),
            ),
            (None, None) => (
                "Pod".into(),
                text(&meta["generateName"]).unwrap_or_default(),
                None,
                "v1".into(),
            ),
        };
        Skip {
            namespace: namespace.into(),
            kind,
            name,
            uid,
            api_version,
            message: format!("apiwitness did not inject this pod ({reason}): {message}"),
        }
    }
}

pub enum Events {
    /// Kept in memory, for tests of the webhook.
    Recorded(Mutex<Vec<Skip>>),
    Live(kube::Client),
}

impl Events {
    pub fn recorded() -> Events {
        Events::Recorded(Mutex::new(Vec::new()))
    }

    pub fn taken(&self) -> Vec<Skip> {
        match self {
            Events::Recorded(v) => v.lock().map(|v| v.clone()).unwrap_or_default(),
            Events::Live(_) => Vec::new(),
        }
    }

    pub fn report(&self, skip: Skip) {
        match self {
            Events::Recorded(v) => {
                if let Ok(mut v) = v.lock() {
                    v.push(skip);
                }
            }
            Events::Live(client) => {
                let client = client.clone();
                tokio::spawn(async move {
                    if let Err(e) = write(client, &skip).await {
                        tracing::warn!(namespace = %skip.namespace, name = %skip.name, "could not record the skip Event: {e}");
                    }
                });
            }
        }
    }
}

async fn write(client: kube::Client, skip: &Skip) -> Result<(), kube::Error> {
    let now = k8s_openapi::chrono::Utc::now();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", skip.name.trim_end_matches('-'))),
            namespace: Some(skip.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(skip.api_version.clone()),
            kind: Some(skip.kind.clone()),
            name: Some(skip.name.clone()),
            namespace: Some(skip.namespace.clone()),
            uid: skip.uid.clone(),
            ..Default::default()
        },
        reason: Some(REASON.into()),
        message: Some(skip.message.clone()),
        type_: Some("Warning".into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some("apiwitness-injector".into()),
        reporting_instance: Some(
            std::env::var("POD_NAME").unwrap_or_else(|_| "apiwitness-injector".into()),
        ),
        action: Some("Inject".into()),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("apiwitness-injector".into()),
            host: None,
        }),
        ..Default::default()
    };
    Api::<Event>::namespaced(client, &skip.namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_named_pod_is_the_subject() {
        let pod = json!({"metadata": {"name": "agent", "uid": "u1"}});
        let skip = Skip::about("shop", &pod, "HostNetwork", "why");
        assert_eq!((skip.kind.as_str(), skip.name.as_str()), ("Pod", "agent"));
        assert!(skip.message.contains("(HostNetwork): why"));
    }

    #[test]
    fn a_pod_without_a_name_points_at_its_owner() {
        let pod = json!({"metadata": {"generateName": "web-5d-", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d", "uid": "rs1", "controller": true}]}});
        let skip = Skip::about("shop", &pod, "OptedOut", "no");
        assert_eq!(
            (skip.kind.as_str(), skip.name.as_str(), skip.uid.as_deref()),
            ("ReplicaSet", "web-5d", Some("rs1"))
        );
    }
}
