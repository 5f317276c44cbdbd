//! Deliveries of a set of endpoints (a tenant's), in id order: their ranges
//! of the by-endpoint index merged, so every id read is one of theirs and a
//! page is full or final.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::records::DeliveryRecord;
use super::tables::{DELIVERIES, DELIVERIES_BY_ENDPOINT, DELIVERIES_BY_EVENT};
use super::webhooks::{DeliveryFilter, DeliveryPage};
use super::{ReadTxn, StoreError};

type IdRange = redb::Range<'static, (u128, u64), ()>;

/// The delivery ids of several endpoints' index ranges, ascending.
struct MergedIds {
    ranges: Vec<IdRange>,
    /// The next id of each range not yet yielded, smallest on top.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    failed: Option<StoreError>,
}

impl MergedIds {
    fn new(ranges: Vec<IdRange>) -> MergedIds {
        let mut merged = MergedIds {
            ranges,
            heads: BinaryHeap::new(),
            failed: None,
        };
        for at in 0..merged.ranges.len() {
            merged.advance(at);
        }
        merged
    }

    fn advance(&mut self, at: usize) {
        match self.ranges[at].next() {
            Some(Ok((key, _))) => self.heads.push(Reverse((key.value().1, at))),
            Some(Err(e)) => self.failed = Some(e.into()),
            None => {}
        }
    }
}

impl Iterator for MergedIds {
    type Item = Result<u64, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.heads.clear();
            return Some(Err(e));
        }
        let Reverse((id, at)) = self.heads.pop()?;
        self.advance(at);
        Some(Ok(id))
    }
}

impl ReadTxn {
    /// Deliveries after id `after` to any of `endpoints` that match
    /// `filter`, oldest first. A filter naming an endpoint outside the set
    /// matches nothing.
    pub fn scan_deliveries_of_endpoints(
        &self,
        endpoints: &[u128],
        filter: &DeliveryFilter,
        after: u64,
        limit: usize,
    ) -> Result<DeliveryPage, StoreError> {
        let empty = || DeliveryPage {
            deliveries: Vec::new(),
            next_after: None,
        };
        match filter.endpoint_id {
            Some(one) if endpoints.contains(&one) => {
                return self.scan_deliveries(filter, after, limit)
            }
            Some(_) => return Ok(empty()),
            None => {}
        }
        let start = after.saturating_add(1);
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> =
            if let Some(event_id) = filter.event_id {
                // One event's deliveries are few (one per endpoint and
                // replay); those to other endpoints are passed over.
                let seq = super::log::seq_of_event_id(event_id);
                let index = self.txn.open_table(DELIVERIES_BY_EVENT)?;
                Box::new(
                    index
                        .range((seq, start)..=(seq, u64::MAX))?
                        .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from)),
                )
            } else {
                let index = self.txn.open_table(DELIVERIES_BY_ENDPOINT)?;
                let mut ranges = Vec::with_capacity(endpoints.len());
                for &endpoint in endpoints {
                    ranges.push(index.range((endpoint, start)..=(endpoint, u64::MAX))?);
                }
                Box::new(MergedIds::new(ranges))
            };
        let mut members = endpoints.to_vec();
        members.sort_unstable();
        let deliveries = self.txn.open_table(DELIVERIES)?;
        let (deliveries, next_after) =
            super::page_by_ids(ids, &deliveries, after, limit, |record: &DeliveryRecord| {
                members.binary_search(&record.endpoint_id).is_ok() && filter.matches(record)
            })?;
        Ok(DeliveryPage {
            deliveries,
            next_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::DeliveryStatus;
    use crate::store::writer::Listeners;
    use crate::store::{Store, Writer};

    /// Deliveries 1..=12 to endpoints 10, 20, 30 in turn, of the events at
    /// seqs 1..=12;
    /// endpoint 20's are settled.
    fn deliveries_to_three_endpoints() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                for seq in 1..=12u64 {
                    let endpoint = [10u128, 20, 30][(seq as usize - 1) % 3];
                    let event = crate::store::log::event_id(0, seq, 0);
                    let id = txn.create_delivery(endpoint, seq, event, "a", 0)?;
                    if endpoint == 20 {
                        let mut record = txn.delivery(id)?.expect("just made");
                        record.status = DeliveryStatus::Succeeded;
                        let due = record.next_attempt_ms.take();
                        txn.put_delivery(id, &record, due)?;
                    }
                }
                Ok(())
            })
            .unwrap();
        thread.stop();
        (dir, store)
    }

    fn ids(page: &DeliveryPage) -> Vec<u64> {
        page.deliveries.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn a_set_of_endpoints_pages_through_its_deliveries_in_id_order() {
        let (_dir, store) = deliveries_to_three_endpoints();
        let txn = store.read().unwrap();
        let all = DeliveryFilter::default();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = txn
                .scan_deliveries_of_endpoints(&[30, 10], &all, after, 3)
                .unwrap();
            assert!(page.deliveries.len() == 3 || page.next_after.is_none());
            seen.extend(ids(&page));
            match page.next_after {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(seen, [1, 3, 4, 6, 7, 9, 10, 12]);

        let pending = DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            ..Default::default()
        };
        let page = txn
            .scan_deliveries_of_endpoints(&[20, 30], &pending, 0, 100)
            .unwrap();
        assert_eq!(ids(&page), [3, 6, 9, 12]);
    }

    #[test]
    fn filters_naming_an_endpoint_or_event_outside_the_set_match_nothing() {
        let (_dir, store) = deliveries_to_three_endpoints();
        let txn = store.read().unwrap();
        let of_endpoint = |endpoint| DeliveryFilter {
            endpoint_id: Some(endpoint),
            ..Default::default()
        };
        let scan = |filter: &DeliveryFilter| {
            ids(&txn
                .scan_deliveries_of_endpoints(&[10], filter, 0, 100)
                .unwrap())
        };
        assert_eq!(scan(&of_endpoint(10)), [1, 4, 7, 10]);
        assert!(scan(&of_endpoint(20)).is_empty());
        let event_at = |seq: u64| DeliveryFilter {
            event_id: Some(crate::store::log::event_id(0, seq, 0)),
            ..Default::default()
        };
        assert_eq!(scan(&event_at(4)), [4]);
        assert!(scan(&event_at(5)).is_empty());
        assert!(txn
            .scan_deliveries_of_endpoints(&[], &DeliveryFilter::default(), 0, 100)
            .unwrap()
            .deliveries
            .is_empty());
    }
}
