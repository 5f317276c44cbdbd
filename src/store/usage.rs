//! What each table holds: rows, bytes and its oldest row, for operators
//! watching the file grow.

use redb::{Key, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, Value};

use super::records::{DeliveryRecord, EmailRecord, EventRecord};
use super::tables::{for_each_table, TableVisitor, DELIVERIES, EMAILS, EVENTS, TRACKED};
use super::{get_record, ReadTxn, StoreError};

/// One table's share of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUsage {
    pub name: String,
    pub rows: u64,
    /// Keys and values as stored.
    pub stored_bytes: u64,
    /// Branch pages and other bookkeeping.
    pub metadata_bytes: u64,
    /// Allocated but unused within the table's pages.
    pub fragmented_bytes: u64,
    /// The oldest row, for tables whose keys follow time.
    pub oldest: Option<OldestRow>,
}

/// The first row of a table keyed in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestRow {
    /// Its seq (events, tracked calls) or id (deliveries, messages).
    pub id: u64,
    /// When it was received (events, tracked calls) or created
    /// (deliveries, messages), Unix ms.
    pub at_ms: i64,
}

impl ReadTxn {
    /// Every table of the file with its rows, bytes and oldest row.
    pub fn table_usage(&self) -> Result<Vec<TableUsage>, StoreError> {
        struct Measure<'a>(&'a redb::ReadTransaction, Vec<TableUsage>);
        impl TableVisitor for Measure<'_> {
            fn visit<K: Key + 'static, V: Value + 'static>(
                &mut self,
                definition: TableDefinition<K, V>,
            ) -> Result<(), StoreError> {
                let table = self.0.open_table(definition)?;
                let stats = table.stats()?;
                self.1.push(TableUsage {
                    name: definition.name().to_owned(),
                    rows: table.len()?,
                    stored_bytes: stats.stored_bytes(),
                    metadata_bytes: stats.metadata_bytes(),
                    fragmented_bytes: stats.fragmented_bytes(),
                    oldest: None,
                });
                Ok(())
            }
        }
        let mut measure = Measure(&self.txn, Vec::new());
        for_each_table(&mut measure)?;
        let mut usage = measure.1;
        for table in &mut usage {
            table.oldest = self.oldest_row(&table.name)?;
        }
        Ok(usage)
    }

    /// The oldest row of the tables whose keys follow arrival: the log,
    /// deliveries and messages by their dense ids, tracked calls by receipt.
    fn oldest_row(&self, table: &str) -> Result<Option<OldestRow>, StoreError> {
        use redb::TableHandle as _;
        let first_record =
            |id: Option<u64>, at: &dyn Fn(u64) -> Result<Option<i64>, StoreError>| match id {
                Some(id) => Ok(at(id)?.map(|at_ms| OldestRow { id, at_ms })),
                None => Ok(None),
            };
        if table == EVENTS.name() {
            let events = self.txn.open_table(EVENTS)?;
            let first = events.first()?.map(|(k, _)| k.value());
            return first_record(first, &|id| {
                Ok(get_record::<u64, EventRecord>(&events, id)?.map(|r| r.received_at_ms))
            });
        }
        if table == DELIVERIES.name() {
            let deliveries = self.txn.open_table(DELIVERIES)?;
            let first = deliveries.first()?.map(|(k, _)| k.value());
            return first_record(first, &|id| {
                Ok(get_record::<u64, DeliveryRecord>(&deliveries, id)?.map(|r| r.created_at_ms))
            });
        }
        if table == EMAILS.name() {
            let emails = self.txn.open_table(EMAILS)?;
            let first = emails.first()?.map(|(k, _)| k.value());
            return first_record(first, &|id| {
                Ok(get_record::<u64, EmailRecord>(&emails, id)?.map(|r| r.created_at_ms))
            });
        }
        if table == TRACKED.name() {
            let tracked = self.txn.open_table(TRACKED)?;
            return Ok(tracked.first()?.map(|(k, _)| {
                let (at_ms, seq) = k.value();
                OldestRow { id: seq, at_ms }
            }));
        }
        Ok(None)
    }
}
