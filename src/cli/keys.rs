//! `herald keys create|list|revoke`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Map, Value};

use super::table::{text, Table};
use super::{raw, CliError, Session};
use crate::api_client::api_path;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Make a key; it is printed once, and Herald keeps only its hash.
    Create {
        /// What the key may do.
        #[arg(long, value_parser = ["admin", "write", "read"])]
        role: String,
        /// Confine the key to this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// A note for whoever reads the list later.
        #[arg(long)]
        description: Option<String>,
    },
    /// The keys made through the API (not those in the configuration).
    List,
    /// Refuse a key from now on.
    Revoke { id: String },
}

pub(crate) fn run(s: &mut Session, action: Action) -> Result<String, CliError> {
    match action {
        Action::Create {
            role,
            tenant,
            description,
        } => {
            let mut body = Map::new();
            body.insert("role".into(), role.into());
            if let Some(tenant) = tenant {
                body.insert("tenant".into(), tenant.into());
            }
            if let Some(description) = description {
                body.insert("description".into(), description.into());
            }
            let answer = s.send(
                Method::POST,
                &api_path(&["v1", "keys"], &[]),
                Some(&Value::Object(body)),
            )?;
            if s.json {
                return Ok(raw(&answer));
            }
            let key = answer.json()?;
            let scope = match key["tenant"].as_str() {
                Some(tenant) => format!("tenant {tenant}"),
                None => "every tenant".to_owned(),
            };
            // The key alone on its line, so that it is easy to copy or cut out.
            Ok(format!(
                "{} created: role {}, {scope}\n{}\nstore it now: it is not shown again\n",
                text(&key["id"]),
                text(&key["role"]),
                text(&key["key"])
            ))
        }
        Action::List => {
            let answer = s.send(Method::GET, &api_path(&["v1", "keys"], &[]), None)?;
            if s.json {
                return Ok(raw(&answer));
            }
            let mut table = Table::new(&[
                ("ID", 40),
                ("ROLE", 6),
                ("TENANT", 20),
                ("DESCRIPTION", 40),
                ("CREATED", 24),
            ]);
            for k in answer.json()?["keys"].as_array().into_iter().flatten() {
                table.row(vec![
                    text(&k["id"]),
                    text(&k["role"]),
                    text(&k["tenant"]),
                    text(&k["description"]),
                    text(&k["created_at"]),
                ]);
            }
            if table.is_empty() {
                return Ok("no keys made through the API\n".to_owned());
            }
            Ok(table.render())
        }
        Action::Revoke { id } => {
            let answer = s.send(Method::DELETE, &api_path(&["v1", "keys", &id], &[]), None)?;
            if s.json {
                return Ok(raw(&answer));
            }
            Ok(format!("{id}: revoked\n"))
        }
    }
}
