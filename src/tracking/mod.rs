//! Server-side tracking: Segment-compatible ingestion into the event log,
//! identity (profiles, linked anonymous ids), and the questions asked of
//! it: counts, funnels, attribution, export; plus retention.

pub mod analysis;
pub mod ingest;
pub mod retention;
pub mod segment;
pub mod settings;
pub mod txn;
