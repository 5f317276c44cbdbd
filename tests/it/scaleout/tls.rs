//! TLS to PostgreSQL: a node whose URL says `sslmode=require` reaches the
//! database only over TLS, verifying the server against the configured CA,
//! and refuses to start when the certificate does not verify; `herald
//! migrate --to` connects the same way.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn node_toml(url: &str, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or(String::new(), |path| {
        format!("postgres_ca_file = {}\n", toml_str(path))
    });
    format!("[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n{ca}")
}

/// The daemon's connections to `database` that are encrypted, counted over
/// a plain one of the test's own.
fn encrypted_connections(url: &str) -> u64 {
    let database = url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("a database name");
    psql(
        &TlsServer::plain(url),
        &format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.datname = '{database}'"
        ),
    )
    .parse()
    .expect("a count")
}

#[test]
fn sslmode_require_connects_over_verified_tls_or_not_at_all() {
    if !super::postgres_or_skip() {
        return;
    }
    let Some(server) = TlsServer::start() else {
        eprintln!("skipped: no openssl command to make the test certificates");
        return;
    };
    let url = server.fresh_database();
    let ca = server.ca_file();

    // herald migrate --to: a redb install's log copied over TLS.
    let mut redb = Daemon::start("[store]\nbackend = \"redb\"\n");
    create(
        redb.addr,
        &json!({"type": "order.placed", "data": {"n": 1}}),
    );
    assert!(redb.sigterm().success());
    let mut migrate = herald();
    migrate
        .args(["migrate", "--to", &url, "--ca-file"])
        .arg(&ca)
        .arg("--from")
        .arg(redb.data_dir().join("herald.redb"));
    let out = run_with_deadline(&mut migrate, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "herald migrate over TLS failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let node = Daemon::start(&node_toml(&url, Some(&ca)));
    create(
        node.addr,
        &json!({"type": "order.placed", "data": {"n": 2}}),
    );
    assert_eq!(count_events(node.addr), 2);
    assert!(
        encrypted_connections(&url) > 0,
        "the node holds no encrypted connection to its database"
    );
    drop(node);

    // Without the CA, Mozilla's roots do not vouch for the server: no
    // start, and no falling back to plain text.
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(dir.path(), &node_toml(&url, None));
    let out = run_with_deadline(herald().arg("serve").arg("--config").arg(&config), STARTUP);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started unverified:\n{stderr}");
    assert!(
        stderr.contains("certificate is refused") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
}
