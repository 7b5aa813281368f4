//! The pure part of the webhook: given a pod (or a workload) as the apiserver
//! sends it, decide what to do and build the JSON Patch that does it. No I/O
//! here, so every decision is a unit test.

use crate::settings::{InjectSettings, Mode, SignerMode};
use crate::trust::{BUNDLE_CONFIGMAP, CLUSTER_CA_CONFIGMAP};
use serde_json::{Value, json};

/// The opt-in annotation, on a pod, a pod template or a workload; also the
/// namespace label.
pub const INJECT: &str = "apiwitness.io/inject";
/// Set on pods that carry the containers, so a reinvocation adds nothing.
pub const STATUS: &str = "apiwitness.io/status";
/// Set on a pod template whose opt-in was copied from its workload, so that
/// removing the workload's annotation can take it away again.
pub const INHERITED: &str = "apiwitness.io/inject-inherited";

pub const INTERCEPTOR: &str = "apiwitness-interceptor";
pub const INIT_IPTABLES: &str = "apiwitness-init-iptables";
const TOKEN_VOLUME: &str = "apiwitness-token";
const UPSTREAM_CA_VOLUME: &str = "apiwitness-upstream-ca";
const XTABLES_VOLUME: &str = "apiwitness-xtables-lock";
const TOKEN_DIR: &str = "/var/run/secrets/apiwitness.io/token";
const UPSTREAM_CA_DIR: &str = "/var/run/secrets/apiwitness.io/upstream";

/// Per-pod overrides, each an annotation.
pub const OVERRIDE_AGGREGATOR_URL: &str = "apiwitness.io/aggregator-url";
pub const OVERRIDE_BODY_LIMIT: &str = "apiwitness.io/body-limit";
pub const OVERRIDE_LOG_LEVEL: &str = "apiwitness.io/log-level";
pub const OVERRIDE_MODE: &str = "apiwitness.io/mode";
pub const OVERRIDE_CPU_REQUEST: &str = "apiwitness.io/proxy-cpu-request";
pub const OVERRIDE_MEMORY_REQUEST: &str = "apiwitness.io/proxy-memory-request";
pub const OVERRIDE_CPU_LIMIT: &str = "apiwitness.io/proxy-cpu-limit";
pub const OVERRIDE_MEMORY_LIMIT: &str = "apiwitness.io/proxy-memory-limit";

#[derive(Debug, Clone, PartialEq)]
pub enum PodDecision {
    /// Add the containers: the JSON Patch operations, and warnings for the
    /// user (shown by kubectl).
    Inject {
        patch: Vec<Value>,
        warnings: Vec<String>,
    },
    /// Opted in, but left alone: an Event says why.
    Skip {
        reason: &'static str,
        message: String,
    },
    /// Not opted in, or already injected: nothing to do or say.
    Ignore,
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer(&format!("/metadata/annotations/{}", escape(key)))
        .and_then(Value::as_str)
}

/// A JSON Pointer token for `key` (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Decides for a pod being created. `namespace_opted_in` is the namespace's
/// `apiwitness.io/inject=true` label.
pub fn decide_pod(pod: &Value, namespace_opted_in: bool, settings: &InjectSettings) -> PodDecision {
    let opt = annotation(pod, INJECT);
    let already = annotation(pod, STATUS) == Some("injected")
        || containers(pod, "initContainers").any(|c| c["name"] == INTERCEPTOR);
    if already {
        return PodDecision::Ignore;
    }
    match opt {
        Some("false") => {
            if namespace_opted_in {
                return PodDecision::Skip {
                    reason: "OptedOut",
                    message: format!("the pod's {INJECT} annotation is \"false\""),
                };
            }
            return PodDecision::Ignore;
        }
        Some("true") => {}
        _ if namespace_opted_in => {}
        _ => return PodDecision::Ignore,
    }
    if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        return PodDecision::Skip {
            reason: "HostNetwork",
            message: "the pod uses the node's network namespace, where its apiserver traffic cannot be redirected without touching every other process of the node".into(),
        };
    }
    if !settings.native_sidecars {
        return PodDecision::Skip {
            reason: "NoNativeSidecars",
            message: "the interceptor runs as a native sidecar (an init container with restartPolicy Always), which needs Kubernetes 1.29 or later".into(),
        };
    }
    let effective = match apply_overrides(pod, settings) {
        Ok(s) => s,
        Err(message) => {
            return PodDecision::Skip {
                reason: "BadAnnotation",
                message,
            };
        }
    };
    PodDecision::Inject {
        patch: pod_patch(pod, &effective),
        warnings: uid_warnings(pod, &effective),
    }
}

fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The settings with the pod's annotations applied; a bad value is an error
/// that names the annotation.
pub fn apply_overrides(pod: &Value, base: &InjectSettings) -> Result<InjectSettings, String> {
    let mut s = base.clone();
    if let Some(url) = annotation(pod, OVERRIDE_AGGREGATOR_URL) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "{OVERRIDE_AGGREGATOR_URL} must be an http(s) URL, got {url:?}"
            ));
        }
        s.aggregator_url = url.into();
    }
    if let Some(limit) = annotation(pod, OVERRIDE_BODY_LIMIT) {
        s.body_limit = limit.parse().map_err(|_| {
            format!("{OVERRIDE_BODY_LIMIT} must be a number of bytes, got {limit:?}")
        })?;
    }
    if let Some(level) = annotation(pod, OVERRIDE_LOG_LEVEL) {
        if level.is_empty() || level.contains(char::is_whitespace) {
            return Err(format!(
                "{OVERRIDE_LOG_LEVEL} must be a log filter such as \"debug\", got {level:?}"
            ));
        }
        s.log_level = level.into();
    }
    if let Some(mode) = annotation(pod, OVERRIDE_MODE) {
        s.mode = Mode::parse(mode).ok_or_else(|| {
            format!("{OVERRIDE_MODE} must be \"iptables\" or \"env\", got {mode:?}")
        })?;
    }
    for (key, slot) in [
        (OVERRIDE_CPU_REQUEST, &mut s.resources.cpu_request),
        (OVERRIDE_MEMORY_REQUEST, &mut s.resources.memory_request),
        (OVERRIDE_MEMORY_LIMIT, &mut s.resources.memory_limit),
    ] {
        if let Some(q) = annotation(pod, key) {
            check_quantity(key, q)?;
            *slot = q.into();
        }
    }
    if let Some(q) = annotation(pod, OVERRIDE_CPU_LIMIT) {
        check_quantity(OVERRIDE_CPU_LIMIT, q)?;
        s.resources.cpu_limit = Some(q.into());
    }
    Ok(s)
}

/// A Kubernetes quantity, checked loosely: a number with an optional suffix.
fn check_quantity(key: &str, q: &str) -> Result<(), String> {
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &q[digits.len()..];
    let known = ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"];
    if digits.is_empty() || digits.parse::<f64>().is_err() || !known.contains(&suffix) {
        return Err(format!(
            "{key} must be a quantity such as \"100m\" or \"64Mi\", got {q:?}"
        ));
    }
    Ok(())
}

fn uid_warnings(pod: &Value, s: &InjectSettings) -> Vec<String> {
    let pod_uid = pod
        .pointer("/spec/securityContext/runAsUser")
        .and_then(Value::as_i64);
    containers(pod, "containers")
        .chain(containers(pod, "initContainers"))
        .filter(|c| {
            c.pointer("/securityContext/runAsUser")
                .and_then(Value::as_i64)
                .or(pod_uid)
                == Some(s.proxy_uid)
        })
        .map(|c| {
            format!(
                "apiwitness: container {} runs as UID {}, the interceptor's: its apiserver traffic bypasses the interceptor and is not recorded",
                c["name"].as_str().unwrap_or("?"),
                s.proxy_uid
            )
        })
        .collect()
}

/// The workload that owns the pod, from its controller reference: a
/// ReplicaSet made by a Deployment is named after it plus the
/// pod-template-hash, which names the Deployment.
pub fn workload_of(pod: &Value) -> Option<(String, String)> {
    let owner = pod
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == Value::Bool(true))?;
    let kind = owner["kind"].as_str()?;
    let name = owner["name"].as_str()?;
    if kind == "ReplicaSet"
        && let Some(hash) = pod
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str)
        && let Some(deployment) = name.strip_suffix(&format!("-{hash}"))
    {
        return Some(("Deployment".into(), deployment.into()));
    }
    Some((kind.into(), name.into()))
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn interceptor_container(pod: &Value, s: &InjectSettings) -> Value {
    let mut env = vec![
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_UID", "metadata.uid"),
        field_env("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("NODE_NAME", "spec.nodeName"),
    ];
    if let Some((kind, name)) = workload_of(pod) {
        env.push(json!({"name": "APIWITNESS_WORKLOAD_KIND", "value": kind}));
        env.push(json!({"name": "APIWITNESS_WORKLOAD_NAME", "value": name}));
    }
    let plain = |k: &str, v: String| json!({"name": k, "value": v});
    match s.mode {
        Mode::Iptables => {
            env.push(plain("APIWITNESS_MODE", "transparent".into()));
            env.push(plain(
                "APIWITNESS_LISTEN",
                format!("0.0.0.0:{}", s.proxy_port),
            ));
        }
        Mode::Env => {
            env.push(plain("APIWITNESS_MODE", "explicit".into()));
            env.push(plain(
                "APIWITNESS_LISTEN",
                format!("127.0.0.1:{}", s.proxy_port),
            ));
            env.push(plain(
                "APIWITNESS_UPSTREAM",
                format!("https://{}", s.apiserver_service),
            ));
        }
    }
    env.extend([
        plain(
            "APIWITNESS_UPSTREAM_CA_FILE",
            format!("{UPSTREAM_CA_DIR}/ca.crt"),
        ),
        plain("APIWITNESS_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
        plain("APIWITNESS_CERTIFY_URL", s.certify_url.clone()),
        plain("APIWITNESS_CERTIFY_CA_PEM", s.certify_ca_pem.clone()),
        plain("APIWITNESS_AGGREGATOR_URL", s.aggregator_url.clone()),
        plain("APIWITNESS_BODY_LIMIT", s.body_limit.to_string()),
        plain("APIWITNESS_LOG", s.log_level.clone()),
        plain("APIWITNESS_ADMIN_ADDR", format!("0.0.0.0:{}", s.admin_port)),
    ]);
    let mut limits = json!({"memory": s.resources.memory_limit});
    if let Some(cpu) = &s.resources.cpu_limit {
        limits["cpu"] = json!(cpu);
    }
    let probe = |path: &str, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": s.admin_port},
            "periodSeconds": 1,
            "failureThreshold": failures,
        })
    };
    json!({
        "name": INTERCEPTOR,
        "image": s.interceptor_image,
        "imagePullPolicy": s.image_pull_policy,
        // A native sidecar: it starts before, and outlives, the app.
        "restartPolicy": "Always",
        "env": env,
        "ports": [
            {"name": "aw-proxy", "containerPort": s.proxy_port, "protocol": "TCP"},
            {"name": "aw-admin", "containerPort": s.admin_port, "protocol": "TCP"},
        ],
        "startupProbe": probe("/readyz", 120),
        "readinessProbe": probe("/readyz", 3),
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": s.admin_port}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": s.resources.cpu_request, "memory": s.resources.memory_request},
            "limits": limits,
        },
        "securityContext": {
            "runAsUser": s.proxy_uid,
            "runAsGroup": s.proxy_uid,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": UPSTREAM_CA_VOLUME, "mountPath": UPSTREAM_CA_DIR, "readOnly": true},
        ],
    })
}

fn init_iptables_container(s: &InjectSettings) -> Value {
    let destinations: Vec<String> = std::iter::once(s.apiserver_service)
        .chain(s.apiserver_endpoints.iter().copied())
        .map(|a| a.to_string())
        .collect();
    json!({
        "name": INIT_IPTABLES,
        "image": s.init_iptables_image,
        "imagePullPolicy": s.image_pull_policy,
        "env": [
            {"name": "APIWITNESS_APISERVER", "value": destinations.join(",")},
            {"name": "APIWITNESS_PROXY_PORT", "value": s.proxy_port.to_string()},
            {"name": "APIWITNESS_PROXY_UID", "value": s.proxy_uid.to_string()},
            {"name": "APIWITNESS_VERIFY", "value": "true"},
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // iptables takes its lock under /run.
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}],
    })
}

fn volumes(s: &InjectSettings) -> Vec<Value> {
    let mut v = vec![
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": s.token_audience, "expirationSeconds": 3600, "path": "token"}}]}}),
        json!({"name": UPSTREAM_CA_VOLUME, "configMap": {"name": CLUSTER_CA_CONFIGMAP,
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
    ];
    if s.mode == Mode::Iptables {
        v.push(json!({"name": XTABLES_VOLUME, "emptyDir": {"medium": "Memory"}}));
    }
    v
}

/// The JSON Patch that adds our init containers ahead of the user's (so the
/// user's own init containers can already use the apiserver), the volumes,
/// the status annotation, and in env mode the apps' Service env.
pub fn pod_patch(pod: &Value, s: &InjectSettings) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut ours = Vec::new();
    if s.mode == Mode::Iptables {
        ours.push(init_iptables_container(s));
    }
    ours.push(interceptor_container(pod, s));
    match pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
    {
        Some(existing) if !existing.is_empty() => {
            for (i, c) in ours.into_iter().enumerate() {
                ops.push(
                    json!({"op": "add", "path": format!("/spec/initContainers/{i}"), "value": c}),
                );
            }
        }
        _ => ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": ours})),
    }
    match pod.pointer("/spec/volumes").and_then(Value::as_array) {
        Some(_) => {
            for v in volumes(s) {
                ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
            }
        }
        None => ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes(s)})),
    }
    if s.mode == Mode::Env {
        let service_env = [
            json!({"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}),
            json!({"name": "KUBERNETES_SERVICE_PORT", "value": s.proxy_port.to_string()}),
            json!({"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": s.proxy_port.to_string()}),
        ];
        // The user's init containers move back by ours, which env mode makes one.
        let shifted = |field: &str, i: usize| if field == "initContainers" { i + 1 } else { i };
        for field in ["initContainers", "containers"] {
            for (i, c) in containers(pod, field).enumerate() {
                let base = format!("/spec/{field}/{}/env", shifted(field, i));
                if c.get("env").and_then(Value::as_array).is_some() {
                    for e in &service_env {
                        ops.push(json!({"op": "add", "path": format!("{base}/-"), "value": e}));
                    }
                } else {
                    ops.push(json!({"op": "add", "path": base, "value": service_env}));
                }
            }
        }
    }
    if s.signer == SignerMode::PrivateCa {
        ops.extend(trust_private_ca(pod));
    }
    ops.extend(set_annotations(pod, "", &[(STATUS, "injected")]));
    ops
}

/// In private-CA mode the app containers must trust the injector's CA: the
/// ServiceAccount volume's `ca.crt` (`kube-api-access-*`, which the
/// ServiceAccount admission plugin added before any webhook ran) comes from
/// the namespace's bundle of the cluster CA plus that CA instead. The
/// interceptor keeps the plain cluster CA for the apiserver.
fn trust_private_ca(pod: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let volumes = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (i, volume) in volumes.enumerate() {
        if !volume["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
        {
            continue;
        }
        let sources = volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (j, source) in sources.enumerate() {
            if source.pointer("/configMap/name").and_then(Value::as_str)
                == Some(CLUSTER_CA_CONFIGMAP)
            {
                ops.push(json!({"op": "replace", "path": format!("/spec/volumes/{i}/projected/sources/{j}/configMap/name"), "value": BUNDLE_CONFIGMAP}));
            }
        }
    }
    ops
}

/// Operations that set annotations on the object at `prefix` (a pod: "";
/// a template: "/spec/template"), creating the maps that are missing.
fn set_annotations(object: &Value, prefix: &str, pairs: &[(&str, &str)]) -> Vec<Value> {
    let at = |p: &str| object.pointer(&format!("{prefix}{p}"));
    if at("/metadata").is_none() {
        let map: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        return vec![
            json!({"op": "add", "path": format!("{prefix}/metadata"), "value": {"annotations": map}}),
        ];
    }
    if at("/metadata/annotations").is_none_or(Value::is_null) {
        let map: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        return vec![
            json!({"op": "add", "path": format!("{prefix}/metadata/annotations"), "value": map}),
        ];
    }
    pairs
        .iter()
        .map(|(k, v)| {
            json!({"op": "add", "path": format!("{prefix}/metadata/annotations/{}", escape(k)), "value": v})
        })
        .collect()
}

/// Where a workload kind keeps its pod template.
pub fn template_prefix(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// For a workload: copy its opt-in into its pod template, so annotating a
/// Deployment rolls its pods out with the sidecar; and take a copied opt-in
/// away again when the workload's annotation goes, which rolls them back.
pub fn workload_patch(kind: &str, operation: &str, workload: &Value) -> Vec<Value> {
    let Some(prefix) = template_prefix(kind) else {
        return vec![];
    };
    // A Job's template cannot change once the Job exists.
    if kind == "Job" && operation != "CREATE" {
        return vec![];
    }
    let Some(template) = workload.pointer(prefix) else {
        return vec![];
    };
    let wants = annotation(workload, INJECT) == Some("true");
    let has = annotation(template, INJECT);
    let inherited = annotation(template, INHERITED) == Some("true");
    if wants && has != Some("true") {
        return set_annotations(workload, prefix, &[(INJECT, "true"), (INHERITED, "true")]);
    }
    if !wants && inherited {
        return [INJECT, INHERITED]
            .iter()
            .filter(|k| annotation(template, k).is_some())
            .map(|k| {
                json!({"op": "remove", "path": format!("{prefix}/metadata/annotations/{}", escape(k))})
            })
            .collect();
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/{name}",
            apiwitness_runtime::manifest_dir!()
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn patched(object: &Value, ops: &[Value]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut out = object.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    fn names(pod: &Value, field: &str) -> Vec<String> {
        containers(pod, field)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn pod_from_review(name: &str) -> Value {
        fixture(name)["request"]["object"].clone()
    }

    #[test]
    fn an_opted_in_pod_gets_both_containers_before_its_own_init_containers() {
        let pod = pod_from_review("pod-opted-in.json");
        let PodDecision::Inject { patch, warnings } =
            decide_pod(&pod, false, &InjectSettings::example())
        else {
            panic!("not injected");
        };
        assert!(warnings.is_empty());
        let out = patched(&pod, &patch);
        assert_eq!(
            names(&out, "initContainers"),
            [INIT_IPTABLES, INTERCEPTOR, "migrate"]
        );
        assert_eq!(names(&out, "containers"), ["web"]);
        let sidecar = &out["spec"]["initContainers"][1];
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(sidecar["securityContext"]["runAsUser"], 2102);
        assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            sidecar["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        let env = |name: &str| {
            sidecar["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(env("APIWITNESS_WORKLOAD_KIND")["value"], "Deployment");
        assert_eq!(env("APIWITNESS_WORKLOAD_NAME")["value"], "web");
        let init = &out["spec"]["initContainers"][0];
        assert_eq!(
            init["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        assert_eq!(
            init["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(init["env"][0]["value"], "10.96.0.1:443,172.18.0.2:6443");
        let volumes: Vec<&str> = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            volumes,
            [
                "kube-api-access-x",
                TOKEN_VOLUME,
                UPSTREAM_CA_VOLUME,
                XTABLES_VOLUME
            ]
        );
        assert_eq!(
            out["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "apiwitness"
        );
        assert_eq!(annotation(&out, STATUS), Some("injected"));
        // Reinvoked (reinvocationPolicy: IfNeeded): nothing more is added.
        assert_eq!(
            decide_pod(&out, false, &InjectSettings::example()),
            PodDecision::Ignore
        );
    }

    #[test]
    fn a_pod_without_init_containers_or_volumes_gets_the_lists() {
        let pod = json!({"metadata": {"annotations": {INJECT: "true"}}, "spec": {"containers": [{"name": "a"}]}});
        let PodDecision::Inject { patch, .. } = decide_pod(&pod, false, &InjectSettings::example())
        else {
            panic!()
        };
        let out = patched(&pod, &patch);
        assert_eq!(names(&out, "initContainers"), [INIT_IPTABLES, INTERCEPTOR]);
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn skips_and_ignores() {
        let s = InjectSettings::example();
        let host = pod_from_review("pod-host-network.json");
        assert!(matches!(
            decide_pod(&host, false, &s),
            PodDecision::Skip {
                reason: "HostNetwork",
                ..
            }
        ));
        let plain = json!({"metadata": {}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(decide_pod(&plain, false, &s), PodDecision::Ignore);
        assert!(matches!(
            decide_pod(&plain, true, &s),
            PodDecision::Inject { .. }
        ));
        let out =
            json!({"metadata": {"annotations": {INJECT: "false"}}, "spec": {"containers": []}});
        assert!(matches!(
            decide_pod(&out, true, &s),
            PodDecision::Skip {
                reason: "OptedOut",
                ..
            }
        ));
        assert_eq!(decide_pod(&out, false, &s), PodDecision::Ignore);
        let old = InjectSettings {
            native_sidecars: false,
            ..s
        };
        let pod =
            json!({"metadata": {"annotations": {INJECT: "true"}}, "spec": {"containers": []}});
        assert!(matches!(
            decide_pod(&pod, false, &old),
            PodDecision::Skip {
                reason: "NoNativeSidecars",
                ..
            }
        ));
    }

    #[test]
    fn annotations_override_settings_and_bad_ones_skip_with_the_reason() {
        let s = InjectSettings::example();
        let pod = json!({"metadata": {"annotations": {
            INJECT: "true", OVERRIDE_BODY_LIMIT: "4096", OVERRIDE_LOG_LEVEL: "debug",
            OVERRIDE_AGGREGATOR_URL: "http://elsewhere:8080", OVERRIDE_MEMORY_LIMIT: "256Mi",
            OVERRIDE_CPU_LIMIT: "500m"}},
            "spec": {"containers": [{"name": "a"}]}});
        let e = apply_overrides(&pod, &s).unwrap();
        assert_eq!(
            (
                e.body_limit,
                e.log_level.as_str(),
                e.aggregator_url.as_str()
            ),
            (4096, "debug", "http://elsewhere:8080")
        );
        assert_eq!(e.resources.memory_limit, "256Mi");
        assert_eq!(e.resources.cpu_limit.as_deref(), Some("500m"));
        let bad = json!({"metadata": {"annotations": {INJECT: "true", OVERRIDE_MEMORY_LIMIT: "lots"}}, "spec": {}});
        let PodDecision::Skip { reason, message } = decide_pod(&bad, false, &s) else {
            panic!()
        };
        assert_eq!(reason, "BadAnnotation");
        assert!(message.contains(OVERRIDE_MEMORY_LIMIT), "{message}");
    }

    #[test]
    fn env_mode_points_the_apps_at_the_sidecar_without_init_iptables() {
        let pod = pod_from_review("pod-opted-in.json");
        let mut pod = pod;
        pod["metadata"]["annotations"][OVERRIDE_MODE] = json!("env");
        let PodDecision::Inject { patch, .. } = decide_pod(&pod, false, &InjectSettings::example())
        else {
            panic!()
        };
        let out = patched(&pod, &patch);
        assert_eq!(names(&out, "initContainers"), [INTERCEPTOR, "migrate"]);
        for c in containers(&out, "containers").chain(containers(&out, "initContainers").skip(1)) {
            let env = c["env"].as_array().unwrap();
            assert!(
                env.iter()
                    .any(|e| e["name"] == "KUBERNETES_SERVICE_HOST" && e["value"] == "127.0.0.1"),
                "{c}"
            );
            assert!(
                env.iter()
                    .any(|e| e["name"] == "KUBERNETES_SERVICE_PORT" && e["value"] == "15443"),
                "{c}"
            );
        }
        let sidecar = &out["spec"]["initContainers"][0];
        assert!(
            sidecar["env"].as_array().unwrap().iter().any(
                |e| e["name"] == "APIWITNESS_UPSTREAM" && e["value"] == "https://10.96.0.1:443"
            )
        );
        assert!(
            sidecar["env"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["name"] != "KUBERNETES_SERVICE_HOST")
        );
    }

    #[test]
    fn private_ca_mode_points_the_apps_ca_at_the_bundle_and_keeps_the_sidecars() {
        let mut pod = pod_from_review("pod-opted-in.json");
        pod["spec"]["volumes"][0]["projected"]["sources"] = json!([
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]);
        let settings = InjectSettings {
            signer: SignerMode::PrivateCa,
            ..InjectSettings::example()
        };
        let PodDecision::Inject { patch, .. } = decide_pod(&pod, false, &settings) else {
            panic!()
        };
        let out = patched(&pod, &patch);
        assert_eq!(
            out["spec"]["volumes"][0]["projected"]["sources"][1]["configMap"]["name"],
            BUNDLE_CONFIGMAP
        );
        assert_eq!(
            out["spec"]["volumes"][2]["configMap"]["name"], CLUSTER_CA_CONFIGMAP,
            "the sidecar's upstream CA stays the cluster's"
        );
        // Cluster-CA mode leaves the app's trust alone.
        let PodDecision::Inject { patch, .. } = decide_pod(&pod, false, &InjectSettings::example())
        else {
            panic!()
        };
        assert_eq!(
            patched(&pod, &patch)["spec"]["volumes"][0]["projected"]["sources"][1]["configMap"]["name"],
            CLUSTER_CA_CONFIGMAP
        );
    }

    #[test]
    fn an_app_running_as_the_sidecars_uid_is_warned_about() {
        let pod = json!({"metadata": {"annotations": {INJECT: "true"}}, "spec": {
            "securityContext": {"runAsUser": 2102},
            "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000}}]}});
        let PodDecision::Inject { warnings, .. } =
            decide_pod(&pod, false, &InjectSettings::example())
        else {
            panic!()
        };
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("container a runs as UID 2102"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_deployments_annotation_is_copied_into_its_template_and_taken_back() {
        let deployment = fixture("deployment-annotated.json")["request"]["object"].clone();
        let ops = workload_patch("Deployment", "UPDATE", &deployment);
        let out = patched(&deployment, &ops);
        assert_eq!(annotation(&out["spec"]["template"], INJECT), Some("true"));
        assert_eq!(
            annotation(&out["spec"]["template"], INHERITED),
            Some("true")
        );
        // Applied again, nothing changes.
        assert!(workload_patch("Deployment", "UPDATE", &out).is_empty());
        // The annotation is removed from the Deployment: the template loses both.
        let mut removed = out.clone();
        removed["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(INJECT);
        let back = patched(&removed, &workload_patch("Deployment", "UPDATE", &removed));
        assert_eq!(annotation(&back["spec"]["template"], INJECT), None);
        assert_eq!(annotation(&back["spec"]["template"], INHERITED), None);
        // A template that opted in by itself is left alone.
        let own = json!({"metadata": {}, "spec": {"template": {"metadata": {"annotations": {INJECT: "true"}}}}});
        assert!(workload_patch("Deployment", "UPDATE", &own).is_empty());
    }

    #[test]
    fn cronjobs_jobs_and_templates_without_metadata() {
        let cron = json!({"metadata": {"annotations": {INJECT: "true"}},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        let out = patched(&cron, &workload_patch("CronJob", "CREATE", &cron));
        assert_eq!(
            annotation(&out["spec"]["jobTemplate"]["spec"]["template"], INJECT),
            Some("true")
        );
        let job = json!({"metadata": {"annotations": {INJECT: "true"}}, "spec": {"template": {"metadata": {}}}});
        assert!(!workload_patch("Job", "CREATE", &job).is_empty());
        assert!(workload_patch("Job", "UPDATE", &job).is_empty());
        assert!(workload_patch("ConfigMap", "CREATE", &job).is_empty());
    }

    #[test]
    fn workloads_are_named_from_owner_references() {
        let pod = json!({"metadata": {"labels": {"pod-template-hash": "5d8f7c9b"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f7c9b", "controller": true}]}});
        assert_eq!(workload_of(&pod), Some(("Deployment".into(), "web".into())));
        let sts = json!({"metadata": {"ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}]}});
        assert_eq!(workload_of(&sts), Some(("StatefulSet".into(), "db".into())));
        assert_eq!(workload_of(&json!({"metadata": {}})), None);
    }
}
