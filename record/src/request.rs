//! A method, path and query as the Kubernetes apiserver understands them.
//!
//! The rules follow the apiserver's own request-info resolution (the one that
//! RBAC and audit use), so that a verb we report is the verb the audit log
//! reports for the same request. On top of that, requests to the `connect`
//! subresources (exec, attach, portforward, proxy) get the verb `connect`, and
//! PATCH carries its patch type, because the OpenAPI spec names operations
//! that way.

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// What a request does, in the vocabulary of the OpenAPI spec's
/// `x-kubernetes-action` and of RBAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    #[serde(rename = "deletecollection")]
    DeleteCollection,
    Connect,
    Proxy,
    /// A method that has no meaning for this path (for example `PUT` on a collection).
    Unknown,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Connect => "connect",
            Verb::Proxy => "proxy",
            Verb::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a PATCH, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
    /// A Content-Type that the apiserver would refuse with 415.
    Unsupported,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> PatchType {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::StrategicMerge,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
            _ => PatchType::Unsupported,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the path must start with '/', got {0:?}")]
    RelativePath(String),
    #[error("the path segment {0:?} is not valid UTF-8 once percent-decoded")]
    BadEncoding(String),
}

/// A request parsed into the parts the apiserver sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRequest {
    /// False for discovery, `/version`, `/openapi/...`, health checks and the like.
    pub is_resource_request: bool,
    pub verb: Verb,
    /// The HTTP method, upper-case, as sent.
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// Empty for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub patch_type: Option<PatchType>,
    /// `dryRun=All`: the apiserver changes nothing.
    pub dry_run: bool,
    /// The request came through one of the deprecated `/watch/` or `/proxy/` path prefixes.
    pub legacy_prefix: Option<Verb>,
    /// More path follows the subresource (`pods/x/proxy/metrics`).
    #[serde(default)]
    pub extra_path: bool,
}

impl ApiRequest {
    /// Parses `method`, `path` and `query` (without the `?`). `content_type`
    /// is only read for PATCH.
    pub fn parse(
        method: &str,
        path: &str,
        query: &str,
        content_type: Option<&str>,
    ) -> Result<ApiRequest, RequestError> {
        if !path.starts_with('/') {
            return Err(RequestError::RelativePath(path.to_string()));
        }
        let method_upper = method.to_ascii_uppercase();
        let segments = split_path(path)?;
        let mut parsed = ApiRequest {
            is_resource_request: false,
            verb: non_resource_verb(&method_upper),
            method: method_upper,
            path: path.to_string(),
            group: String::new(),
            version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            patch_type: None,
            dry_run: query_values(query, "dryRun").any(|v| v == "All"),
            legacy_prefix: None,
            extra_path: false,
        };

        let rest: &[Cow<'_, str>] = match segments.first().map(|s| &**s) {
            Some("api") if segments.len() >= 2 => {
                parsed.version = segments[1].to_string();
                &segments[2..]
            }
            Some("apis") if segments.len() >= 3 => {
                parsed.group = segments[1].to_string();
                parsed.version = segments[2].to_string();
                &segments[3..]
            }
            _ => return Ok(parsed),
        };
        // `/api/v1` and `/apis/<group>/<version>` alone are discovery documents.
        if rest.is_empty() {
            return Ok(parsed);
        }

        let mut rest = rest;
        if matches!(&*rest[0], "watch" | "proxy") {
            parsed.legacy_prefix = Some(if rest[0] == "watch" {
                Verb::Watch
            } else {
                Verb::Proxy
            });
            rest = &rest[1..];
            if rest.is_empty() {
                return Ok(parsed);
            }
        }
        parsed.is_resource_request = true;

        // `namespaces/<ns>/<resource>...` scopes the request, except when the
        // resource is the namespace itself (`namespaces/<name>[/status]`).
        if rest[0] == "namespaces" && rest.len() >= 2 {
            parsed.namespace = rest[1].to_string();
            let namespace_subresource = rest
                .get(2)
                .is_some_and(|s| s == "status" || s == "finalize");
            if rest.len() >= 3 && !namespace_subresource {
                rest = &rest[2..];
            }
        }
        parsed.resource = rest[0].to_string();
        if let Some(name) = rest.get(1) {
            parsed.name = name.to_string();
        }
        if let Some(sub) = rest.get(2) {
            parsed.subresource = sub.to_string();
        }
        parsed.extra_path = rest.len() > 3;

        // The apiserver reads the flag with Go's strconv.ParseBool.
        let watch_requested = query_values(query, "watch")
            .any(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
        parsed.verb = match parsed.legacy_prefix {
            Some(prefix) => prefix,
            None => resource_verb(&parsed.method, !parsed.name.is_empty(), watch_requested),
        };
        if parsed.verb == Verb::Watch && parsed.legacy_prefix.is_none() && !parsed.name.is_empty() {
            // `GET .../pods/x?watch=true` is not a watch on the apiserver: it is a get.
            parsed.verb = Verb::Get;
        }
        if is_connect_subresource(&parsed.resource, &parsed.subresource) {
            parsed.verb = Verb::Connect;
        }
        if parsed.method == "PATCH" {
            parsed.patch_type = Some(
                content_type
                    .map(PatchType::from_content_type)
                    .unwrap_or(PatchType::Unsupported),
            );
        }
        Ok(parsed)
    }

    /// `group/version` for `/apis`, `version` for the core group.
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `resource` or `resource/subresource`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The path in the form the OpenAPI spec writes it, with `{namespace}`,
    /// `{name}` and `{path}` for the variable parts: the key to the request's
    /// operation. A non-resource path is returned as it is.
    pub fn path_template(&self) -> String {
        if !self.is_resource_request {
            return self.path.clone();
        }
        self.template_with_prefix(self.legacy_prefix.map(|p| p.as_str()))
    }

    /// For a watch, the template of the other operation that the spec has for
    /// it: the `/watch/` form of a `?watch=true` list, or the list form of a
    /// `/watch/` request. Coverage counts both, since tools disagree on which
    /// one a watch exercises.
    pub fn watch_twin_template(&self) -> Option<String> {
        if self.verb != Verb::Watch {
            return None;
        }
        match self.legacy_prefix {
            Some(Verb::Watch) => Some(self.template_with_prefix(None)),
            _ => Some(self.template_with_prefix(Some("watch"))),
        }
    }

    fn template_with_prefix(&self, prefix: Option<&str>) -> String {
        let mut t = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if let Some(prefix) = prefix {
            t.push('/');
            t.push_str(prefix);
        }
        if self.resource == "namespaces" {
            t.push_str("/namespaces");
            if !self.name.is_empty() {
                t.push_str("/{name}");
            }
        } else {
            if !self.namespace.is_empty() {
                t.push_str("/namespaces/{namespace}");
            }
            t.push('/');
            t.push_str(&self.resource);
            if !self.name.is_empty() {
                t.push_str("/{name}");
            }
        }
        if !self.subresource.is_empty() {
            t.push('/');
            t.push_str(&self.subresource);
            if self.extra_path {
                t.push_str("/{path}");
            }
        }
        t
    }

    /// The verb as the apiserver's authorizer and audit log name it: connect
    /// requests are `get` or `create` there, by method.
    pub fn audit_verb(&self) -> &'static str {
        match self.verb {
            Verb::Connect => match self.method.as_str() {
                "GET" | "HEAD" => "get",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "unknown",
            },
            Verb::Proxy if !self.is_resource_request => "proxy",
            verb if !self.is_resource_request => non_resource_audit_verb(verb),
            verb => verb.as_str(),
        }
    }
}

/// The path's segments, decoded; borrowed from the path where they hold
/// no escape, as nearly all do.
fn split_path(path: &str) -> Result<Vec<Cow<'_, str>>, RequestError> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if !s.contains('%') {
                return Ok(Cow::Borrowed(s));
            }
            percent_decode_str(s)
                .decode_utf8()
                .map_err(|_| RequestError::BadEncoding(s.to_string()))
        })
        .collect()
}

fn query_values<'q>(query: &'q str, key: &'q str) -> impl Iterator<Item = String> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn resource_verb(method: &str, has_name: bool, watch: bool) -> Verb {
    match (method, has_name) {
        ("GET" | "HEAD", _) if watch => Verb::Watch,
        ("GET" | "HEAD", true) => Verb::Get,
        ("GET" | "HEAD", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => Verb::Unknown,
    }
}

fn non_resource_verb(method: &str) -> Verb {
    match method {
        "GET" | "HEAD" => Verb::Get,
        "POST" => Verb::Create,
        "PUT" => Verb::Update,
        "PATCH" => Verb::Patch,
        "DELETE" => Verb::Delete,
        _ => Verb::Unknown,
    }
}

fn non_resource_audit_verb(verb: Verb) -> &'static str {
    match verb {
        Verb::Create => "post",
        Verb::Update => "put",
        other => other.as_str(),
    }
}

fn is_connect_subresource(resource: &str, subresource: &str) -> bool {
    matches!(
        (resource, subresource),
        ("pods", "exec" | "attach" | "portforward" | "proxy")
            | ("services", "proxy")
            | ("nodes", "proxy")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, path_and_query: &str) -> ApiRequest {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        ApiRequest::parse(method, path, query, None).expect("parses")
    }

    #[test]
    fn core_namespaced_get_and_list() {
        let get = parse("GET", "/api/v1/namespaces/default/pods/web-1");
        assert!(get.is_resource_request);
        assert_eq!(get.verb, Verb::Get);
        assert_eq!(
            (
                get.group.as_str(),
                get.version.as_str(),
                get.resource.as_str()
            ),
            ("", "v1", "pods")
        );
        assert_eq!(
            (get.namespace.as_str(), get.name.as_str()),
            ("default", "web-1")
        );

        let list = parse("GET", "/api/v1/namespaces/default/pods?limit=500");
        assert_eq!(list.verb, Verb::List);
        assert_eq!(list.name, "");

        let all = parse("GET", "/api/v1/pods");
        assert_eq!((all.verb, all.namespace.as_str()), (Verb::List, ""));
    }

    #[test]
    fn named_group_with_subresource() {
        let r = parse(
            "PUT",
            "/apis/apps/v1/namespaces/prod/deployments/web/status",
        );
        assert_eq!(r.verb, Verb::Update);
        assert_eq!(r.group_version(), "apps/v1");
        assert_eq!(r.resource_path(), "deployments/status");
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("prod", "web"));
    }

    #[test]
    fn the_namespace_resource_itself() {
        let get = parse("GET", "/api/v1/namespaces/kube-system");
        assert_eq!(get.resource, "namespaces");
        assert_eq!(get.name, "kube-system");
        assert_eq!(get.namespace, "kube-system");
        assert_eq!(get.verb, Verb::Get);

        let finalize = parse("PUT", "/api/v1/namespaces/doomed/finalize");
        assert_eq!(finalize.resource_path(), "namespaces/finalize");
        assert_eq!(finalize.name, "doomed");
        assert_eq!(finalize.verb, Verb::Update);

        let list = parse("GET", "/api/v1/namespaces");
        assert_eq!(
            (list.verb, list.resource.as_str()),
            (Verb::List, "namespaces")
        );
    }

    #[test]
    fn watch_by_query_and_by_legacy_path() {
        for q in [
            "watch=true",
            "watch=1",
            "watch=True",
            "labelSelector=a%3Db&watch=true",
        ] {
            let r = parse("GET", &format!("/api/v1/namespaces/ns/configmaps?{q}"));
            assert_eq!(r.verb, Verb::Watch, "{q}");
            assert_eq!(r.legacy_prefix, None);
        }
        assert_eq!(
            parse("GET", "/api/v1/configmaps?watch=false").verb,
            Verb::List
        );
        let legacy = parse("GET", "/api/v1/watch/namespaces/ns/configmaps/one");
        assert_eq!(legacy.verb, Verb::Watch);
        assert_eq!(legacy.legacy_prefix, Some(Verb::Watch));
        assert_eq!(
            (legacy.resource.as_str(), legacy.name.as_str()),
            ("configmaps", "one")
        );
        // A watch query on a named object is a get to the apiserver.
        assert_eq!(
            parse("GET", "/api/v1/namespaces/ns/configmaps/one?watch=true").verb,
            Verb::Get
        );
    }

    #[test]
    fn writes_and_deletes() {
        assert_eq!(
            parse("POST", "/api/v1/namespaces/ns/configmaps").verb,
            Verb::Create
        );
        assert_eq!(
            parse("DELETE", "/api/v1/namespaces/ns/configmaps/a").verb,
            Verb::Delete
        );
        assert_eq!(
            parse("DELETE", "/api/v1/namespaces/ns/configmaps").verb,
            Verb::DeleteCollection
        );
        assert_eq!(
            parse("PUT", "/api/v1/namespaces/ns/configmaps").verb,
            Verb::Unknown
        );
        let dry = parse("POST", "/api/v1/namespaces/ns/configmaps?dryRun=All");
        assert!(dry.dry_run);
    }

    #[test]
    fn patch_types_from_content_type() {
        let cases = [
            ("application/json-patch+json", PatchType::Json),
            ("application/merge-patch+json", PatchType::Merge),
            (
                "application/strategic-merge-patch+json; charset=utf-8",
                PatchType::StrategicMerge,
            ),
            ("application/apply-patch+yaml", PatchType::Apply),
            ("text/plain", PatchType::Unsupported),
        ];
        for (ct, want) in cases {
            let r = ApiRequest::parse("PATCH", "/api/v1/namespaces/ns/configmaps/a", "", Some(ct))
                .expect("parses");
            assert_eq!((r.verb, r.patch_type), (Verb::Patch, Some(want)), "{ct}");
        }
    }

    #[test]
    fn connect_subresources() {
        let exec = parse(
            "POST",
            "/api/v1/namespaces/ns/pods/p/exec?command=ls&stdout=true",
        );
        assert_eq!(exec.verb, Verb::Connect);
        assert_eq!(exec.resource_path(), "pods/exec");
        assert_eq!(exec.audit_verb(), "create");
        let pf = parse("GET", "/api/v1/namespaces/ns/pods/p/portforward");
        assert_eq!((pf.verb, pf.audit_verb()), (Verb::Connect, "get"));
        let proxy = parse("GET", "/api/v1/namespaces/ns/services/s/proxy/metrics");
        assert_eq!(proxy.verb, Verb::Connect);
        assert_eq!(proxy.subresource, "proxy");
        // The log subresource is an ordinary get.
        assert_eq!(
            parse("GET", "/api/v1/namespaces/ns/pods/p/log").verb,
            Verb::Get
        );
    }

    #[test]
    fn non_resource_requests() {
        for path in [
            "/version",
            "/openapi/v2",
            "/api",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/api/v1",
            "/healthz",
            "/",
        ] {
            let r = parse("GET", path);
            assert!(!r.is_resource_request, "{path}");
            assert_eq!(r.verb, Verb::Get, "{path}");
        }
        assert_eq!(parse("POST", "/logs").audit_verb(), "post");
    }

    #[test]
    fn percent_encoded_segments_are_decoded() {
        let r = parse("GET", "/apis/example.com/v1/namespaces/ns/widgets/a%3Ab");
        assert_eq!(r.name, "a:b");
        let bad = ApiRequest::parse("GET", "/api/v1/namespaces/%FF/pods", "", None);
        assert_eq!(bad, Err(RequestError::BadEncoding("%FF".into())));
        assert_eq!(
            ApiRequest::parse("GET", "api/v1", "", None),
            Err(RequestError::RelativePath("api/v1".into()))
        );
    }

    #[test]
    fn templates_are_the_specs_paths() {
        let t = |m: &str, p: &str| parse(m, p).path_template();
        assert_eq!(
            t("GET", "/api/v1/namespaces/ns/configmaps/c1"),
            "/api/v1/namespaces/{namespace}/configmaps/{name}"
        );
        assert_eq!(t("GET", "/api/v1/configmaps"), "/api/v1/configmaps");
        assert_eq!(
            t("PUT", "/apis/apps/v1/namespaces/ns/deployments/web/scale"),
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        );
        assert_eq!(
            t("GET", "/api/v1/namespaces/kube-system"),
            "/api/v1/namespaces/{name}"
        );
        assert_eq!(
            t("PUT", "/api/v1/namespaces/x/finalize"),
            "/api/v1/namespaces/{name}/finalize"
        );
        assert_eq!(t("GET", "/api/v1/namespaces"), "/api/v1/namespaces");
        assert_eq!(
            t("GET", "/api/v1/namespaces/ns/pods/p/proxy/a/b"),
            "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}"
        );
        assert_eq!(
            t("GET", "/api/v1/nodes/n1/proxy"),
            "/api/v1/nodes/{name}/proxy"
        );
        assert_eq!(
            t("GET", "/api/v1/watch/namespaces/ns/configmaps"),
            "/api/v1/watch/namespaces/{namespace}/configmaps"
        );
        assert_eq!(t("GET", "/version"), "/version");

        let watch = parse("GET", "/api/v1/namespaces/ns/configmaps?watch=true");
        assert_eq!(
            watch.path_template(),
            "/api/v1/namespaces/{namespace}/configmaps"
        );
        assert_eq!(
            watch.watch_twin_template().unwrap(),
            "/api/v1/watch/namespaces/{namespace}/configmaps"
        );
        let legacy = parse("GET", "/api/v1/watch/configmaps");
        assert_eq!(legacy.watch_twin_template().unwrap(), "/api/v1/configmaps");
        assert_eq!(
            parse("GET", "/api/v1/configmaps").watch_twin_template(),
            None
        );
    }

    #[test]
    fn cluster_scoped_custom_resource() {
        let r = parse(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
        );
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("", "admin"));
        assert_eq!(r.group, "rbac.authorization.k8s.io");
    }
}
