//! Running Herald: the CLI, backups, and what survives kill -9 and SIGTERM.

mod backup;
mod cli;
mod durability;
mod retention;
