//! The daemon at its edges: slow and hostile clients, configuration errors
//! that must not leak secrets, mail headers, and a storage failure.

mod mail_headers;
mod secrets;
mod slow_clients;
mod storage_fault;
