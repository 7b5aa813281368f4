//! Provenance: every version of every object that the traffic touched, its
//! spec history, the diff between two versions, and bisect (the first
//! version where fields took values).
//!
//! - [`extract`]: the versions and failed attempts a record shows (pure);
//! - [`history`]: ordering, spec history, diff and bisect (pure);
//! - [`path`]: field paths, as JSON Pointers or dotted paths with list
//!   items by merge key;
//! - [`probe`]: one field read from an object's JSON text, for bisect;
//! - [`text`]: a version read from its object's JSON text, for ingest;
//! - [`yaml`]: YAML text and unified diffs of it.
//!
//! Versions are extracted at ingest, in the same transaction as their
//! record, so that queries read only the versions of one object.

pub mod document;
pub mod extract;
pub mod history;
pub mod path;
pub mod probe;
pub mod text;
pub mod yaml;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The resourceVersion of a tombstone that came without one (a delete
/// answered with a Status): it orders after every real one of its lineage.
pub const TOMBSTONE_RV: &str = "deleted";

/// How a version was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The answer to the pod's own write.
    Write,
    /// Read in a get, list or watch answer: somebody wrote it, maybe not the pod.
    Observed,
}

/// Who made or saw a version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Who {
    /// `namespace/name` of the pod whose traffic showed it.
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
}

/// One state of one object, as the apiserver returned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub group: String,
    pub resource: String,
    pub kind: String,
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339: when the record that showed it started.
    pub time: String,
    /// create, update, patch, apply, delete, get, list or watch; for a write
    /// to a subresource, `patch status` and the like.
    pub verb: String,
    pub source: Source,
    /// The object is gone: a delete's answer, or a watch's DELETED event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Only the metadata was readable (a protobuf body).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    pub who: Who,
    /// The record it came from.
    pub record: String,
    /// The object, without its managedFields; `None` for a tombstone that
    /// came as a Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// What a version takes from its object, read from its tree or from its
/// text ([`text`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectHead {
    /// Empty where the object does not say, or says it with no string.
    pub kind: String,
    pub api_version: String,
    pub uid: String,
    /// `None` where the object does not name itself.
    pub name: Option<String>,
    /// Empty where the object does not say.
    pub namespace: String,
    pub resource_version: String,
    pub generation: Option<i64>,
}

/// A version as a store writes it: its document (the version without its
/// object) and its object, each as JSON text. Ingest encodes them where it
/// parses the record, on the request's thread, so the one thread that
/// writes to the store only writes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedVersion {
    /// Without its object, which is `object`.
    pub version: Version,
    /// `version` as stored.
    pub document: String,
    /// Compact JSON, as bisect's text search expects it
    /// ([`path::FieldPath::needles`]), without managedFields.
    pub object: Option<String>,
}

impl EncodedVersion {
    /// Encodes a version and its object tree. The object is taken out
    /// rather than copied: it is most of the bytes ingest stores.
    pub fn new(mut version: Version) -> Result<EncodedVersion, serde_json::Error> {
        let object = version.object.take();
        Ok(EncodedVersion {
            document: document::document_of(&version),
            object: object.as_ref().map(serde_json::to_string).transpose()?,
            version,
        })
    }

    /// A version whose object is already compact JSON text.
    pub fn with_text(
        version: Version,
        object: String,
    ) -> Result<EncodedVersion, serde_json::Error> {
        debug_assert!(version.object.is_none());
        Ok(EncodedVersion {
            document: document::document_of(&version),
            object: Some(object),
            version,
        })
    }

    /// The version with its object decoded.
    pub fn decoded(&self) -> Result<Version, serde_json::Error> {
        let mut version = self.version.clone();
        version.object = self
            .object
            .as_deref()
            .map(serde_json::from_str)
            .transpose()?;
        Ok(version)
    }
}

/// A write that the apiserver refused: it changed nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub group: String,
    pub resource: String,
    /// From the request body, when it said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub time: String,
    pub verb: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub who: Who,
    pub record: String,
}

/// What a merge looks at in each of two sightings of a version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Standing<'a> {
    pub has_object: bool,
    pub partial: bool,
    pub kind: &'a str,
    pub source: Source,
    pub deleted: bool,
    pub has_generation: bool,
}

impl Standing<'_> {
    fn is_subresource_view(&self) -> bool {
        self.kind == "Scale"
    }

    /// Whether merging `other` into a version standing so takes its object.
    fn takes_object_of(&self, other: &Standing<'_>) -> bool {
        match (self.has_object, other.has_object) {
            (false, true) => true,
            (true, true) => {
                self.partial && !other.partial
                    || self.is_subresource_view() && !other.is_subresource_view()
            }
            _ => false,
        }
    }

    /// Whether merging `other` takes who wrote it and how.
    fn takes_write_of(&self, other: &Standing<'_>) -> bool {
        self.source == Source::Observed && other.source == Source::Write
    }

    /// Whether merging `other` marks the version deleted.
    fn takes_deletion_of(&self, other: &Standing<'_>) -> bool {
        other.deleted && !self.deleted
    }

    /// Whether merging `other` takes its generation.
    fn takes_generation_of(&self, other: &Standing<'_>) -> bool {
        !self.has_generation && other.has_generation
    }

    /// Whether merging `other` into a version standing so changes it at all
    /// ([`Version::merge`]): a sighting seen again, as a relist or a poll
    /// sees it, mostly does not, and a store can tell that from a few
    /// fields of its stored document instead of decoding the whole.
    pub(crate) fn changed_by(&self, other: &Standing<'_>) -> bool {
        self.takes_object_of(other)
            || self.takes_write_of(other)
            || self.takes_deletion_of(other)
            || self.takes_generation_of(other)
    }
}

/// The fields of a stored version's document that make its [`Standing`].
#[derive(Debug, Deserialize)]
pub(crate) struct StandingFields<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    source: Source,
    #[serde(default)]
    partial: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    generation: Option<i64>,
}

impl StandingFields<'_> {
    pub(crate) fn standing(&self, has_object: bool) -> Standing<'_> {
        Standing {
            has_object,
            partial: self.partial,
            kind: &self.kind,
            source: self.source,
            deleted: self.deleted,
            has_generation: self.generation.is_some(),
        }
    }
}

impl Version {
    /// How this version stands for a merge.
    pub(crate) fn standing(&self) -> Standing<'_> {
        Standing {
            has_object: self.object.is_some(),
            partial: self.partial,
            kind: &self.kind,
            source: self.source,
            deleted: self.deleted,
            has_generation: self.generation.is_some(),
        }
    }

    /// Merges another sighting of the same (uid, resourceVersion): the
    /// pod's own write names who and how; a whole object beats a partial
    /// one (or a subresource's view, such as a Scale).
    pub fn merge(&mut self, other: Version) {
        let (mine, theirs) = (self.standing(), other.standing());
        let (take_object, take_write, take_deletion, take_generation) = (
            mine.takes_object_of(&theirs),
            mine.takes_write_of(&theirs),
            mine.takes_deletion_of(&theirs),
            mine.takes_generation_of(&theirs),
        );
        if take_object {
            self.object = other.object.clone();
            self.partial = other.partial;
            self.kind = other.kind.clone();
            self.api_version = other.api_version.clone();
        }
        if take_write {
            self.source = Source::Write;
            self.verb = other.verb;
            self.who = other.who;
            self.record = other.record;
            self.time = other.time;
        }
        if take_deletion {
            self.deleted = true;
        }
        if take_generation {
            self.generation = other.generation;
        }
    }
}

/// Which object a query asks about: `resource` is the plural resource or the
/// Kind, optionally with `.group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectQuery {
    pub namespace: String,
    pub resource: String,
    pub name: String,
}

impl ObjectQuery {
    /// Does a stored version's (group, resource, kind) answer this query?
    pub fn matches(&self, group: &str, resource: &str, kind: &str) -> bool {
        let (what, wanted_group) = match self.resource.split_once('.') {
            Some((r, g)) => (r, Some(g)),
            None => (self.resource.as_str(), None),
        };
        let named = what == resource || what.eq_ignore_ascii_case(kind);
        named && wanted_group.is_none_or(|g| g == group)
    }

    /// The plain resource-or-kind word, for an index lookup.
    pub fn word(&self) -> &str {
        self.resource
            .split_once('.')
            .map_or(self.resource.as_str(), |(r, _)| r)
    }
}
