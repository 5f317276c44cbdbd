//! Running Herald: the CLI, backups, what survives kill -9 and SIGTERM,
//! metrics and the API description.

mod admin_cli;
mod backup;
mod cli;
mod durability;
mod metrics;
mod openapi;
mod retention;
