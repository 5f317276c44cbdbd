//! The operator surface: `check-config`, `serve` flags and the defaults
//! `herald serve` uses with no configuration at all.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

fn check_config(dir: &Path, text: &str, env: &[(&str, &str)]) -> Output {
    let file = dir.join("check.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = herald();
    cmd.arg("check-config").arg(&file).envs(env.iter().copied());
    run_with_deadline(&mut cmd, CLI_TIMEOUT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_accepts_good_files() {
    let dir = tempfile::tempdir().unwrap();
    let full = "[server]\nlisten = \"127.0.0.1:9000\"\napi_keys = [\"0123456789abcdef\"]\n\
                header_timeout = \"5s\"\n[storage]\ndata_dir = \"/var/lib/herald\"\n\
                queue_capacity = 10\n[events]\nmax_batch_events = 5\n[log]\nformat = \"json\"\n";
    for (text, env) in [
        (full, vec![]),
        ("", vec![]),
        // A public address is fine once the environment supplies a key.
        (
            "[server]\nlisten = \"0.0.0.0:8425\"\n",
            vec![("HERALD_API_KEYS", "env-key-0123456789abcdef")],
        ),
    ] {
        let out = check_config(dir.path(), text, &env);
        assert_eq!(out.status.code(), Some(0), "{text}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(": ok"),
            "{text}"
        );
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let out = run_with_deadline(herald().arg("check-config").arg(&example), CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn check_config_names_the_offending_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[server]\nlistn = 1\n", "listn"),
        ("[storag]\n", "storag"),
        (
            "[server]\nheader_timeout = \"soon\"\n",
            "herald: server.header_timeout",
        ),
        (
            "[server]\nlisten = \"0.0.0.0:8425\"\n",
            "herald: server.listen",
        ),
        (
            "[server]\nlisten = \"localhost\"\n",
            "herald: server.listen",
        ),
        (
            "[server]\napi_keys = [\"short\"]\n",
            "herald: server.api_keys",
        ),
        (
            "[storage]\nqueue_capacity = 0\n",
            "herald: storage.queue_capacity",
        ),
        (
            "[events]\nmax_event_bytes = 9000\nmax_request_bytes = 8192\n",
            "herald: events.max_event_bytes",
        ),
        ("[log]\nformat = \"xml\"\n", "(log.format)"),
        ("[log]\nlevel = \"herald=loud\"\n", "herald: log.level"),
        ("not toml at all", "check.toml"),
    ] {
        let out = check_config(dir.path(), text, &[]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{text}: {err}");
        assert!(out.stdout.is_empty(), "{text}");
    }
    let out = run_with_deadline(
        herald()
            .arg("check-config")
            .arg(dir.path().join("missing.toml")),
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"));
}

#[test]
fn serve_with_a_bad_config_exits_2_without_touching_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlistn = 1\n[storage]\ndata_dir = {}\n",
            toml_str(&data)
        ),
    )
    .unwrap();
    let out = run_with_deadline(
        herald().arg("serve").arg("--config").arg(&file),
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("configuration error") && err.contains("listn"),
        "{err}"
    );
    assert!(!data.exists());

    // A bad flag value is a configuration error as well.
    let out = run_with_deadline(
        herald()
            .args(["serve", "--listen", "nowhere", "--data"])
            .arg(&data),
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("server.listen"), "{}", stderr(&out));
    assert!(!data.exists());
}

#[test]
fn serve_flags_override_the_config_file() {
    // The file names a port that is taken and a data directory that must
    // stay unused: only the flags let the daemon start where it does.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let other = tempfile::tempdir().unwrap();
    let file_data = other.path().join("from-file");
    let flag_data = other.path().join("from-flag");
    let d = Daemon::start_with(Options {
        toml: format!(
            "[server]\nlisten = \"{taken_addr}\"\n[storage]\ndata_dir = {}\n",
            toml_str(&file_data)
        ),
        args: vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data".into(),
            flag_data.to_str().unwrap().into(),
        ],
        ..Options::default()
    });
    assert_ne!(d.addr, taken_addr);
    assert_eq!(get(d.addr, "/healthz").status, 200);
    create(d.addr, &serde_json::json!({"type": "where"}));
    assert!(flag_data.join("herald.redb").is_file());
    assert!(!file_data.exists(), "the file's data_dir was used");
    drop(taken);
}

#[test]
fn serve_without_arguments_uses_port_8425_and_herald_data_in_the_working_dir() {
    // The one test on a fixed port: the default is what it checks.
    match TcpListener::bind("127.0.0.1:8425") {
        Ok(probe) => drop(probe),
        Err(e) => {
            eprintln!("skipping: 127.0.0.1:8425 is not free on this machine ({e})");
            return;
        }
    }
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = herald();
    cmd.arg("serve").current_dir(cwd.path());
    let mut proc = Spawned::spawn(&mut cmd, Arc::default());
    // Without a config the log format is "auto": compact text off a terminal.
    let line = proc.wait_for_line(deadline(STARTUP), |l| {
        l.contains("listening").then(|| l.to_owned())
    });
    let line = line.unwrap_or_else(|end| {
        proc.kill();
        panic!("no listening line ({end:?}):\n{}", proc.logs().join("\n"))
    });
    assert!(line.contains("addr=127.0.0.1:8425"), "{line}");
    assert!(
        !line.trim_start().starts_with('{'),
        "not compact text: {line}"
    );
    assert!(
        proc.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("no API key")),
        "an open API is announced:\n{}",
        proc.logs().join("\n")
    );

    let addr: SocketAddr = "127.0.0.1:8425".parse().unwrap();
    let health = get(addr, "/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    assert!(cwd.path().join("herald-data/herald.redb").is_file());

    proc.terminate();
    let status = proc.wait_exit(SHUTDOWN).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}
