//! Lock-free counters and histograms: an observation is a few relaxed
//! atomic adds on memory allocated once, so the hot path pays no lock and
//! no allocation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Observations of whole units (microseconds, operations) in `N` buckets
/// with fixed upper bounds; the exposition scales them (to seconds).
/// Integer sums keep the adds atomic without a compare-and-swap loop.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    /// Per bucket, not cumulative: one add per observation.
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum: AtomicU64,
    /// Units in one exposed base unit (1e6 microseconds in a second):
    /// dividing, not multiplying by its inverse, keeps `0.001` exact.
    units_per_base: f64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// (upper bound in base units, observations at or below it).
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl<const N: usize> Histogram<N> {
    /// `bounds` ascending, in units.
    pub const fn new(bounds: [u64; N], units_per_base: f64) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            units_per_base,
        }
    }

    pub fn observe(&self, units: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < units);
        if let Some(slot) = self.buckets.get(bucket) {
            slot.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(units, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn observe_micros(&self, elapsed: std::time::Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        // Read before the buckets: an observation in progress has added to
        // its bucket before the count, so buckets never trail the count.
        let count = self.count.load(Relaxed);
        let mut running = 0;
        let cumulative = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, slot)| {
                running += slot.load(Relaxed);
                (bound as f64 / self.units_per_base, running)
            })
            .collect();
        Snapshot {
            cumulative,
            // The `+Inf` bucket is the count and may not be below any other.
            count: count.max(running),
            sum: self.sum.load(Relaxed) as f64 / self.units_per_base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_sum_up() {
        let h = Histogram::new([1, 10, 100], 2.0);
        for units in [0, 1, 2, 10, 11, 1000] {
            h.observe(units);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![(0.5, 2), (5.0, 4), (50.0, 5)]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 1024.0 * 0.5);
    }
}
