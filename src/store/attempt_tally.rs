//! What one endpoint's attempts in one minute answered, and how fast: the
//! rows of `endpoint_attempts`, kept up to date as each attempt is recorded
//! so that stats are exact however many deliveries an endpoint has.

use std::collections::BTreeMap;

use super::codec::CodecError;

/// Counts by outcome and a latency histogram with two significant digits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptTally {
    pub attempts: u64,
    /// A 2xx answer.
    pub succeeded: u64,
    /// Any other HTTP answer.
    pub failed: u64,
    /// No HTTP answer (status code 0).
    pub network_errors: u64,
    /// Latency bucket (`latency_bucket`) → attempts in it.
    latencies: BTreeMap<u16, u64>,
}

/// The format byte of an encoded tally: part of the file format.
const FORMAT: u8 = 1;
const HEADER: usize = 1 + 4 * 8;
const PAIR: usize = 2 + 8;

impl AttemptTally {
    pub fn add(&mut self, status_code: u16, latency_ms: u32) {
        self.attempts += 1;
        match status_code {
            200..=299 => self.succeeded += 1,
            0 => self.network_errors += 1,
            _ => self.failed += 1,
        }
        *self
            .latencies
            .entry(latency_bucket(latency_ms))
            .or_default() += 1;
    }

    pub fn merge(&mut self, other: &AttemptTally) {
        self.attempts += other.attempts;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.network_errors += other.network_errors;
        for (bucket, count) in &other.latencies {
            *self.latencies.entry(*bucket).or_default() += count;
        }
    }

    /// The latency at quantile `q` (0–1], as the upper end of its bucket:
    /// exact below 100 ms, within 10% above. `None` without attempts.
    pub fn latency_quantile(&self, q: f64) -> Option<u32> {
        let total: u64 = self.latencies.values().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in &self.latencies {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper(*bucket));
            }
        }
        self.latencies.keys().last().map(|b| bucket_upper(*b))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + PAIR * self.latencies.len());
        out.push(FORMAT);
        for n in [
            self.attempts,
            self.succeeded,
            self.failed,
            self.network_errors,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for (bucket, count) in &self.latencies {
            out.extend_from_slice(&bucket.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AttemptTally, CodecError> {
        let corrupt = |detail: &str| CodecError::Corrupt {
            record: "attempt tally",
            detail: detail.to_owned(),
        };
        if bytes.first() != Some(&FORMAT) {
            return Err(corrupt("unknown format byte"));
        }
        if bytes.len() < HEADER || (bytes.len() - HEADER) % PAIR != 0 {
            return Err(corrupt("wrong length"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let mut tally = AttemptTally {
            attempts: u64_at(1),
            succeeded: u64_at(9),
            failed: u64_at(17),
            network_errors: u64_at(25),
            latencies: BTreeMap::new(),
        };
        for pair in bytes[HEADER..].chunks_exact(PAIR) {
            let bucket = u16::from_le_bytes([pair[0], pair[1]]);
            let count = u64::from_le_bytes(pair[2..].try_into().expect("8 bytes"));
            tally.latencies.insert(bucket, count);
        }
        Ok(tally)
    }
}

/// Below 100 ms each millisecond is its own bucket; above, two significant
/// digits (100–109, 110–119, …, 1000–1099, …). Part of the file format.
fn latency_bucket(ms: u32) -> u16 {
    if ms < 100 {
        return ms as u16;
    }
    let (mut digits, mut exponent) = (ms, 0u16);
    while digits >= 100 {
        digits /= 10;
        exponent += 1;
    }
    100 + (exponent - 1) * 90 + (digits as u16 - 10)
}

/// The largest latency in `bucket`.
fn bucket_upper(bucket: u16) -> u32 {
    if bucket < 100 {
        return u32::from(bucket);
    }
    let exponent = u32::from((bucket - 100) / 90 + 1);
    let digits = u64::from((bucket - 100) % 90 + 10);
    let upper = (digits + 1) * 10u64.pow(exponent) - 1;
    upper.min(u64::from(u32::MAX)) as u32
}

/// The minute an attempt at `at_ms` is counted in.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_falls_in_a_bucket_whose_upper_end_is_within_ten_percent() {
        for ms in (0..5_000u32).chain([99_999, 100_000, 1_234_567, u32::MAX]) {
            let upper = bucket_upper(latency_bucket(ms));
            assert!(upper >= ms, "{ms} → {upper}");
            assert!(
                u64::from(upper) <= u64::from(ms) * 11 / 10 + 1,
                "{ms} → {upper}"
            );
        }
        assert_eq!(latency_bucket(99), 99);
        assert_eq!(latency_bucket(100), 100);
        assert_eq!(bucket_upper(latency_bucket(105)), 109);
        assert_eq!(bucket_upper(latency_bucket(1_050)), 1_099);
    }

    #[test]
    fn tallies_count_outcomes_merge_and_survive_encoding() {
        let mut a = AttemptTally::default();
        a.add(200, 10);
        a.add(500, 20);
        a.add(0, 30);
        let mut b = AttemptTally::default();
        b.add(204, 10);
        b.add(410, 2_000);
        a.merge(&b);
        assert_eq!(
            (a.attempts, a.succeeded, a.failed, a.network_errors),
            (5, 2, 2, 1)
        );
        assert_eq!(a.latency_quantile(0.5), Some(20));
        assert_eq!(a.latency_quantile(0.99), Some(2_099));
        assert_eq!(AttemptTally::decode(&a.encode()).unwrap(), a);
        assert_eq!(AttemptTally::default().latency_quantile(0.5), None);
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let good = {
            let mut t = AttemptTally::default();
            t.add(200, 5);
            t.encode()
        };
        for bad in [&[][..], &[9], &good[..HEADER - 1], &good[..good.len() - 1]] {
            assert!(AttemptTally::decode(bad).is_err(), "{bad:?}");
        }
    }

    /// The layout is part of the file format.
    #[test]
    fn golden_bytes() {
        let mut t = AttemptTally::default();
        t.add(200, 150);
        let mut expected = vec![FORMAT];
        for n in [1u64, 1, 0, 0] {
            expected.extend_from_slice(&n.to_le_bytes());
        }
        expected.extend_from_slice(&105u16.to_le_bytes());
        expected.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(t.encode(), expected);
    }
}
