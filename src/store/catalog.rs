//! The event catalog's table: event types by name, each with its payload
//! versions, schemas and samples.

use redb::{ReadableTable, ReadableTableMetadata};

use super::codec::{decode, encode};
use super::records::EventTypeRecord;
use super::tables::EVENT_TYPES;
use super::{get_record, ReadTxn, StoreError, WriteTxn};

/// Every row of the table, by name.
fn all(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, EventTypeRecord)>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (name, bytes) = row?;
        out.push((name.value().to_owned(), decode(bytes.value())?));
    }
    Ok(out)
}

impl WriteTxn<'_> {
    /// Stores `record` as type `name`; what it replaced, if anything.
    pub fn put_event_type(
        &mut self,
        name: &str,
        record: &EventTypeRecord,
    ) -> Result<Option<EventTypeRecord>, StoreError> {
        let mut table = self.txn.open_table(EVENT_TYPES)?;
        let previous = table.insert(name, encode(record).as_slice())?;
        previous
            .map(|bytes| decode(bytes.value()))
            .transpose()
            .map_err(Into::into)
    }

    /// The stored type `name`, as this transaction sees it.
    pub fn event_type(&self, name: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        get_record::<&str, EventTypeRecord>(&self.txn.open_table(EVENT_TYPES)?, name)
    }

    /// How many types are stored.
    pub fn event_type_count(&self) -> Result<u64, StoreError> {
        Ok(self.txn.open_table(EVENT_TYPES)?.len()?)
    }

    /// Deletes type `name`; what it was, or `None` if there was none.
    pub fn remove_event_type(&mut self, name: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        let mut table = self.txn.open_table(EVENT_TYPES)?;
        let removed = table.remove(name)?;
        removed
            .map(|bytes| decode(bytes.value()))
            .transpose()
            .map_err(Into::into)
    }
}

impl ReadTxn {
    /// Every catalogued type, by name: loaded at start, and listed.
    pub fn event_types(&self) -> Result<Vec<(String, EventTypeRecord)>, StoreError> {
        all(&self.txn.open_table(EVENT_TYPES)?)
    }

    pub fn event_type(&self, name: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        get_record::<&str, EventTypeRecord>(&self.txn.open_table(EVENT_TYPES)?, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::EventTypeVersion;
    use crate::store::writer::Listeners;
    use crate::store::{Store, Writer};

    fn record(description: &str) -> EventTypeRecord {
        EventTypeRecord {
            description: description.into(),
            versions: vec![EventTypeVersion {
                version: 1,
                schema: None,
                sample: "{}".into(),
            }],
            deprecated: false,
            created_at_ms: 1,
            updated_at_ms: 2,
        }
    }

    #[test]
    fn types_are_stored_replaced_listed_and_removed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        let first = writer
            .write_blocking(|txn| {
                txn.put_event_type("user.created", &record("a"))?;
                txn.put_event_type("invoice.paid", &record("b"))
            })
            .unwrap();
        assert_eq!(first, None);
        let replaced = writer
            .write_blocking(|txn| txn.put_event_type("invoice.paid", &record("c")))
            .unwrap();
        assert_eq!(replaced, Some(record("b")));
        let listed = store.read().unwrap().event_types().unwrap();
        assert_eq!(
            listed,
            vec![
                ("invoice.paid".to_owned(), record("c")),
                ("user.created".to_owned(), record("a"))
            ]
        );
        let removed = writer
            .write_blocking(|txn| {
                Ok((
                    txn.remove_event_type("user.created")?,
                    txn.remove_event_type("nope")?,
                    txn.event_type_count()?,
                ))
            })
            .unwrap();
        assert_eq!(removed, (Some(record("a")), None, 1));
        assert_eq!(
            store.read().unwrap().event_type("user.created").unwrap(),
            None
        );
        thread.stop();
    }
}
