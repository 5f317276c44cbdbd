//! API keys created through the API, by id, each stored as a hash of the
//! key with what it grants.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::records::ApiKeyRecord;
use super::tables::API_KEYS;
use super::{ReadTxn, StoreError, WriteTxn};

/// Every row of the table, oldest id first.
fn all(
    table: &impl ReadableTable<u128, &'static [u8]>,
) -> Result<Vec<(u128, ApiKeyRecord)>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (id, bytes) = row?;
        out.push((id.value(), decode(bytes.value())?));
    }
    Ok(out)
}

/// A change to the stored keys, decided over all of them at once.
pub enum KeyChange {
    Put(u128, ApiKeyRecord),
    /// The key removed, with what it was.
    Remove(u128, ApiKeyRecord),
}

impl WriteTxn<'_> {
    /// Runs `decide` over every stored key and applies the change it
    /// returns, atomically with the decision; a refusal changes nothing.
    pub fn change_api_keys<E>(
        &mut self,
        decide: impl FnOnce(&[(u128, ApiKeyRecord)]) -> Result<KeyChange, E>,
    ) -> Result<Result<KeyChange, E>, StoreError> {
        let change = match decide(&self.api_keys()?) {
            Ok(change) => change,
            Err(refusal) => return Ok(Err(refusal)),
        };
        match &change {
            KeyChange::Put(id, record) => self.put_api_key(*id, record)?,
            KeyChange::Remove(id, _) => {
                self.remove_api_key(*id)?;
            }
        }
        Ok(Ok(change))
    }

    /// Every stored key as this transaction sees it, so a decision about
    /// them (the first key, the last admin) is atomic with the change.
    pub fn api_keys(&self) -> Result<Vec<(u128, ApiKeyRecord)>, StoreError> {
        all(&self.txn.open_table(API_KEYS)?)
    }

    pub fn put_api_key(&mut self, id: u128, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(API_KEYS)?
            .insert(id, encode(record).as_slice())?;
        Ok(())
    }

    /// Deletes key `id`; what it was, or `None` if there was no such key.
    pub fn remove_api_key(&mut self, id: u128) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut table = self.txn.open_table(API_KEYS)?;
        let removed = table.remove(id)?;
        removed
            .map(|bytes| decode(bytes.value()))
            .transpose()
            .map_err(Into::into)
    }
}

impl ReadTxn {
    /// Every stored key, oldest id first: loaded once at start, and listed.
    pub fn api_keys(&self) -> Result<Vec<(u128, ApiKeyRecord)>, StoreError> {
        all(&self.txn.open_table(API_KEYS)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Listeners;
    use crate::store::{Store, Writer};

    fn record(role: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            key_hash: [7; 32],
            role: role.into(),
            tenant: Some("acme".into()),
            description: "ci".into(),
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn keys_are_stored_listed_and_removed_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                txn.put_api_key(2, &record("read"))?;
                txn.put_api_key(1, &record("admin"))
            })
            .unwrap();
        let listed = store.read().unwrap().api_keys().unwrap();
        assert_eq!(listed, vec![(1, record("admin")), (2, record("read"))]);

        let removed = writer
            .write_blocking(|txn| Ok((txn.remove_api_key(2)?, txn.remove_api_key(9)?)))
            .unwrap();
        assert_eq!(removed, (Some(record("read")), None));
        let seen_in_txn = writer.write_blocking(|txn| txn.api_keys()).unwrap();
        assert_eq!(seen_in_txn, vec![(1, record("admin"))]);
        thread.stop();
    }
}
