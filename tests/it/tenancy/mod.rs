//! Tenants: what one tenant's keys may see and change of another's.

mod mail_and_tracking;
