//! The event catalog in memory: every catalogued type with its schemas
//! compiled, so that checking an event on ingest costs a map lookup and the
//! validation itself, never a read of the table.

pub mod definition;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use jsonschema::Validator;

use crate::names::{self, EventSource, Subscription};
use crate::store::records::EventTypeRecord;

/// A stored type with the validators of its versions that have a schema.
pub struct CatalogEntry {
    pub record: EventTypeRecord,
    /// (version, its compiled schema); versions without a schema are absent.
    validators: Vec<(u32, Validator)>,
}

impl CatalogEntry {
    fn validator(&self, version: u32) -> Option<&Validator> {
        self.validators
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, validator)| validator)
    }
}

/// Why an event's data does not fit its type's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The payload version whose schema refused it.
    pub version: u32,
    /// A JSON pointer into that version's data (`/amount`; "" for the whole).
    pub path: String,
    pub message: String,
}

/// Every catalogued type, by name. Changes are applied by the writer
/// thread right after they commit (`Writer::write_then`), so memory follows
/// the file in commit order.
#[derive(Default)]
pub struct Catalog {
    types: RwLock<HashMap<String, Arc<CatalogEntry>>>,
    /// On PostgreSQL, the latest change to the catalog applied here.
    version: AtomicI64,
}

impl Catalog {
    /// The catalog of the stored types. A stored schema that no longer
    /// compiles (it was stored by another release) leaves its version
    /// unchecked rather than keeping the daemon from starting.
    pub fn load(stored: Vec<(String, EventTypeRecord)>) -> Catalog {
        let mut types = HashMap::with_capacity(stored.len());
        for (name, record) in stored {
            let entry = definition::entry_of(record).unwrap_or_else(|(entry, problem)| {
                tracing::error!(event_type = %name, problem = %problem,
                    "a stored event schema does not compile; its events are not checked");
                entry
            });
            types.insert(name, Arc::new(entry));
        }
        Catalog {
            types: RwLock::new(types),
            version: AtomicI64::new(0),
        }
    }

    /// Records that the catalog in memory includes every change up to
    /// `version` (PostgreSQL's count of catalog changes).
    pub fn note_version(&self, version: i64) {
        self.version.fetch_max(version, Ordering::SeqCst);
    }

    /// Replaces every type with `stored`, read at `version`, unless this
    /// node already applied a later change of its own: another node changed
    /// the catalog, and an older snapshot must not undo a newer change.
    pub fn replace_all_at(&self, version: i64, stored: Vec<(String, EventTypeRecord)>) {
        let fresh = Catalog::load(stored);
        let types = fresh.types.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut current = self.write();
        if version >= self.version.load(Ordering::SeqCst) {
            *current = types;
            self.note_version(version);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<CatalogEntry>>> {
        // A panic while holding the lock cannot leave the map half-changed:
        // every change is one insert or remove.
        self.types.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<CatalogEntry>>> {
        self.types.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<CatalogEntry>> {
        self.read().get(name).cloned()
    }

    pub fn put(&self, name: &str, entry: Arc<CatalogEntry>) {
        self.write().insert(name.to_owned(), entry);
    }

    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    /// Checks each version of an event's data that its type has a schema
    /// for; the first failure, in version order.
    pub fn check<'d>(
        &self,
        event_type: &str,
        versions: impl IntoIterator<Item = (u32, &'d str)>,
    ) -> Result<(), Mismatch> {
        let Some(entry) = self.get(event_type) else {
            return Ok(());
        };
        if entry.validators.is_empty() {
            return Ok(());
        }
        for (version, data) in versions {
            let Some(validator) = entry.validator(version) else {
                continue;
            };
            // Stored data was parsed once already; this cannot fail.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let first = validator.iter_errors(&value).next().map(|error| Mismatch {
                version,
                path: error.instance_path().as_str().to_owned(),
                message: definition::shorten(&error.masked().to_string()),
            });
            if let Some(mismatch) = first {
                return Err(mismatch);
            }
        }
        Ok(())
    }

    /// What a test send to an endpoint carries: the catalogued type it
    /// would receive from the API (the first such by name), in the version
    /// `pick` chooses among the type's versions, with that version's
    /// sample. `None` when it subscribes to no catalogued type.
    pub fn sample_for(
        &self,
        subscription: Subscription<'_>,
        pick: impl Fn(&str, &[u32]) -> u32,
    ) -> Option<(String, u32, String)> {
        let types = self.read();
        let (name, entry) = types
            .iter()
            .filter(|(name, _)| {
                names::subscribes(subscription, name, EventSource::Api, subscription.tenant)
            })
            .min_by(|a, b| a.0.cmp(b.0))?;
        let versions: Vec<u32> = entry.record.versions.iter().map(|v| v.version).collect();
        let version = pick(name, &versions);
        let sample = entry
            .record
            .versions
            .iter()
            .find(|v| v.version == version)?
            .sample
            .clone();
        Some((name.clone(), version, sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::EventTypeVersion;

    fn record(versions: &[(u32, Option<&str>, &str)]) -> EventTypeRecord {
        EventTypeRecord {
            description: String::new(),
            versions: versions
                .iter()
                .map(|(version, schema, sample)| EventTypeVersion {
                    version: *version,
                    schema: schema.map(str::to_owned),
                    sample: (*sample).to_owned(),
                })
                .collect(),
            deprecated: false,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    const AMOUNT: &str = r#"{"type":"object","required":["amount"],
        "properties":{"amount":{"type":"integer","minimum":0}}}"#;

    #[test]
    fn events_are_checked_against_the_schema_of_each_version_they_carry() {
        let catalog = Catalog::load(vec![(
            "invoice.paid".into(),
            record(&[(1, None, "{}"), (2, Some(AMOUNT), r#"{"amount":1}"#)]),
        )]);
        assert_eq!(catalog.check("invoice.paid", [(1, r#"{"x":"y"}"#)]), Ok(()));
        assert_eq!(catalog.check("other", [(2, r#"{}"#)]), Ok(()));
        assert_eq!(
            catalog.check("invoice.paid", [(1, "{}"), (2, r#"{"amount":5}"#)]),
            Ok(())
        );
        let refused = catalog
            .check("invoice.paid", [(2, r#"{"amount":"lots"}"#)])
            .unwrap_err();
        assert_eq!((refused.version, refused.path.as_str()), (2, "/amount"));
        assert!(!refused.message.contains("lots"), "{}", refused.message);
        let missing = catalog.check("invoice.paid", [(2, "{}")]).unwrap_err();
        assert_eq!(missing.path, "");
        catalog.remove("invoice.paid");
        assert_eq!(catalog.check("invoice.paid", [(2, "{}")]), Ok(()));
    }

    #[test]
    fn a_test_send_takes_the_first_subscribed_type_in_the_version_picked() {
        let catalog = Catalog::load(vec![
            ("b.two".into(), record(&[(1, None, r#"{"b":1}"#)])),
            (
                "a.one".into(),
                record(&[(1, None, r#"{"a":1}"#), (2, None, r#"{"a":2}"#)]),
            ),
        ]);
        let every = Vec::new();
        let sources = [EventSource::Api, EventSource::Herald];
        let subscription = |patterns| Subscription {
            patterns,
            sources: &sources,
            tenant: None,
        };
        let newest = |_: &str, versions: &[u32]| *versions.iter().max().unwrap();
        assert_eq!(
            catalog.sample_for(subscription(&every), newest),
            Some(("a.one".into(), 2, r#"{"a":2}"#.into()))
        );
        assert_eq!(
            catalog.sample_for(subscription(&every), |_, _| 1),
            Some(("a.one".into(), 1, r#"{"a":1}"#.into()))
        );
        let only_b = vec!["b.*".to_owned()];
        assert_eq!(
            catalog.sample_for(subscription(&only_b), newest),
            Some(("b.two".into(), 1, r#"{"b":1}"#.into()))
        );
        let none = vec!["c.*".to_owned()];
        assert_eq!(catalog.sample_for(subscription(&none), newest), None);
        let tracking_only = [EventSource::Tracking];
        let tracked = Subscription {
            patterns: &every,
            sources: &tracking_only,
            tenant: None,
        };
        assert_eq!(catalog.sample_for(tracked, newest), None);
    }
}
