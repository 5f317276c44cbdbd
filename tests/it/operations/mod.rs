//! Running Herald: the CLI, backups, and what survives kill -9 and SIGTERM.

mod admin_cli;
mod backup;
mod cli;
mod durability;
mod retention;
