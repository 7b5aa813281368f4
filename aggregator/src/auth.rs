//! Who may write and read, decided by the apiserver itself.
//!
//! - **Write** (`/ingest`): the bearer token must be a ServiceAccount's
//!   (TokenReview), and a batch may only carry records of that
//!   ServiceAccount's namespace (and, for a token bound to a pod, of that pod):
//!   a compromised pod cannot write another namespace's history.
//! - **Read** (`/coverage`): the token's user must be allowed to `get pods` in
//!   the namespace asked about, or in every namespace for a cluster-wide
//!   report (SubjectAccessReview).
//!
//! Reviews are cached for a minute, keyed by a hash of the token: the token
//! itself is never stored or logged.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CACHE_FOR: Duration = Duration::from_secs(60);
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    NoToken,
    #[error("the token was not accepted by the apiserver{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the apiserver could not review the request: {0}")]
    Unavailable(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Caller {
    /// `(namespace, name)` for a ServiceAccount user.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        rest.split_once(':')
    }

    /// The pod a bound token belongs to, if the token says.
    pub fn pod_name(&self) -> Option<&str> {
        self.extra.get(POD_NAME_EXTRA)?.first().map(String::as_str)
    }
}

/// A TokenReview's answer, by token hash, with when it was given.
type TokenCache = HashMap<u64, (Instant, Result<Caller, AuthError>)>;
/// A SubjectAccessReview's answer, by (user, namespace).
type DecisionCache = HashMap<(String, String), (Instant, bool)>;

pub struct Authorizer {
    client: kube::Client,
    audiences: Vec<String>,
    tokens: Mutex<TokenCache>,
    decisions: Mutex<DecisionCache>,
}

fn token_key(token: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

/// The bearer token of a request's headers.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::NoToken)
}

impl Authorizer {
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Authorizer {
        Authorizer {
            client,
            audiences,
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let key = token_key(token);
        if let Some((at, result)) = self.tokens.lock().ok().and_then(|c| c.get(&key).cloned())
            && at.elapsed() < CACHE_FOR
        {
            return result;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        let result = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(Caller {
                username: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }),
            _ => Err(AuthError::Unauthenticated(
                status.error.map(|e| format!(": {e}")).unwrap_or_default(),
            )),
        };
        if let Ok(mut cache) = self.tokens.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), result.clone()));
        }
        result
    }

    /// May `caller` get pods in `namespace` (all namespaces for `None`)?
    pub async fn may_read(
        &self,
        caller: &Caller,
        namespace: Option<&str>,
    ) -> Result<(), AuthError> {
        self.may(caller, "get", "", "pods", namespace).await
    }

    /// May `caller` get this one object? What provenance shows of an object
    /// is what reading it would show.
    pub async fn may_get_object(
        &self,
        caller: &Caller,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), AuthError> {
        self.may_named(caller, "get", group, resource, namespace, Some(name))
            .await
    }

    /// May `caller` get objects of this resource in `namespace` (cluster
    /// scope for `None`)? What an object search lists.
    pub async fn may_get_resource(
        &self,
        caller: &Caller,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(), AuthError> {
        self.may(caller, "get", group, resource, namespace).await
    }

    /// May `caller` send audit events? Granted by RBAC on
    /// `auditevents.apiwitness.io`, verb `create`, which nobody has by default.
    pub async fn may_send_audit(&self, caller: &Caller) -> Result<(), AuthError> {
        self.may(caller, "create", "apiwitness.io", "auditevents", None)
            .await
    }

    async fn may(
        &self,
        caller: &Caller,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(), AuthError> {
        self.may_named(caller, verb, group, resource, namespace, None)
            .await
    }

    async fn may_named(
        &self,
        caller: &Caller,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), AuthError> {
        let key = (
            caller.username.clone(),
            format!(
                "{verb} {group}/{resource} {} {}",
                namespace.unwrap_or(""),
                name.unwrap_or("")
            ),
        );
        let cached = self
            .decisions
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .filter(|(at, _)| at.elapsed() < CACHE_FOR);
        let allowed = match cached {
            Some((_, allowed)) => allowed,
            None => {
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(caller.username.clone()),
                        uid: Some(caller.uid.clone()),
                        groups: Some(caller.groups.clone()),
                        extra: Some(caller.extra.clone()),
                        resource_attributes: Some(ResourceAttributes {
                            namespace: namespace.map(str::to_string),
                            verb: Some(verb.into()),
                            group: Some(group.into()),
                            resource: Some(resource.into()),
                            name: name.map(str::to_string),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let answer = Api::<SubjectAccessReview>::all(self.client.clone())
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?;
                let allowed = answer.status.is_some_and(|s| s.allowed);
                if let Ok(mut cache) = self.decisions.lock() {
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(key, (Instant::now(), allowed));
                }
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            let what = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            Err(AuthError::Forbidden(format!(
                "{} may not {verb} {what} in {}",
                caller.username,
                namespace
                    .map(|n| format!("namespace {n}"))
                    .unwrap_or_else(|| "all namespaces".into())
            )))
        }
    }
}

/// Checks that a writer may write a record of `(namespace, pod)`.
pub fn may_write(caller: &Caller, namespace: &str, pod: &str) -> Result<(), String> {
    let Some((sa_namespace, _)) = caller.service_account() else {
        return Err(format!(
            "{} is not a ServiceAccount: only interceptors write records",
            caller.username
        ));
    };
    if sa_namespace != namespace {
        return Err(format!(
            "a ServiceAccount of namespace {sa_namespace} may not write records of namespace {namespace:?}"
        ));
    }
    if let Some(bound) = caller.pod_name()
        && bound != pod
    {
        return Err(format!(
            "a token bound to pod {bound} may not write records of pod {pod:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(username: &str, pod: Option<&str>) -> Caller {
        Caller {
            username: username.into(),
            uid: String::new(),
            groups: vec![],
            extra: pod
                .map(|p| BTreeMap::from([(POD_NAME_EXTRA.to_string(), vec![p.to_string()])]))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn writers_write_only_their_own_namespace_and_pod() {
        let sa = caller("system:serviceaccount:shop:app", None);
        assert_eq!(sa.service_account(), Some(("shop", "app")));
        assert!(may_write(&sa, "shop", "web-1").is_ok());
        assert!(
            may_write(&sa, "bank", "web-1")
                .unwrap_err()
                .contains("namespace shop")
        );
        let bound = caller("system:serviceaccount:shop:app", Some("web-1"));
        assert!(may_write(&bound, "shop", "web-1").is_ok());
        assert!(may_write(&bound, "shop", "web-2").is_err());
        assert!(may_write(&caller("alice", None), "shop", "web-1").is_err());
    }

    #[test]
    fn the_bearer_token_is_read_from_the_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), Err(AuthError::NoToken));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), Err(AuthError::NoToken));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer abc.def".parse().unwrap(),
        );
        assert_eq!(bearer(&h), Ok("abc.def"));
    }
}
