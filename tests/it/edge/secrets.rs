//! Configuration errors never echo a password, key or token, however the
//! file or the environment is malformed: run against the real binary, the
//! way an operator meets them (`check-config`, `serve`).

use std::path::Path;
use std::time::Duration;

use crate::support::*;

const CLI_TIMEOUT: Duration = Duration::from_secs(20);
/// The secret in every case below; no three characters of it in a row may
/// appear in the output.
const SECRET: &str = "QzXkJvWqPy7Rm3Tn";

fn fragments() -> Vec<&'static str> {
    (0..SECRET.len() - 2).map(|i| &SECRET[i..i + 3]).collect()
}

/// Runs `herald ARGS` with `config` as its file and `env`; returns
/// stdout, stderr and the exit code.
fn run(dir: &Path, command: &str, config: &str, env: &[(&str, String)]) -> (String, Option<i32>) {
    let file = dir.join("herald.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = herald();
    match command {
        "check-config" => cmd.arg("check-config").arg(&file),
        _ => cmd
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .arg("--data")
            .arg(dir.join("data")),
    };
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_with_deadline(&mut cmd, CLI_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.code())
}

#[test]
fn malformed_relay_urls_and_key_lists_are_refused_without_echoing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let relay = |url: String| format!("[mail.streams.transactional]\nrelay = \"{url}\"\n");
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        // Relay URLs broken in the ways that used to print the password.
        (
            relay(format!("smtp://user:Qz?{}@host:25", &SECRET[2..])),
            vec![],
        ),
        (relay(format!("smtp:/user:{SECRET}@host")), vec![]),
        (relay(format!("smtp//user:{SECRET}@host")), vec![]),
        (relay(format!("smtp://user:{SECRET}")), vec![]),
        (relay(format!("smtp://user:{SECRET}@host:2x5")), vec![]),
        (relay(format!("smtp://host?tls={SECRET}")), vec![]),
        (relay(format!("{SECRET}@smtp://host")), vec![]),
        (relay(format!("smtp://user:{SECRET}@host?x=1")), vec![]),
        // Key lists: broken TOML, wrong types, keys too short or with spaces.
        (format!("[server]\napi_keys = [\"{SECRET}\"\n"), vec![]),
        (format!("[server]\napi_keys = \"{SECRET}\"\n"), vec![]),
        (format!("[server]\napi_keys = [{SECRET}]\n"), vec![]),
        (
            format!("[server]\napi_keys = [\"{SECRET}\" \"x\"]\n"),
            vec![],
        ),
        (
            format!("[server]\napi_keys = [\"{}\"]\n", &SECRET[..10]),
            vec![],
        ),
        (
            format!(
                "[server]\napi_keys = [\"{} {}\"]\n",
                &SECRET[..8],
                &SECRET[8..]
            ),
            vec![],
        ),
        (
            String::new(),
            vec![(
                "HERALD_API_KEYS",
                format!("{} {}", &SECRET[..8], &SECRET[8..]),
            )],
        ),
        (
            String::new(),
            vec![(
                "HERALD_API_KEYS",
                format!("0123456789abcdef,{}", &SECRET[..10]),
            )],
        ),
        // Tracking write keys.
        (
            format!("[[tracking.sources]]\nname = \"web\"\nwrite_key = \"{SECRET}\" x\n"),
            vec![],
        ),
        (
            format!(
                "[[tracking.sources]]\nname = \"web\"\nwrite_key = \"{}\"\n",
                &SECRET[..9]
            ),
            vec![],
        ),
        // Keys with a role and a tenant.
        (
            format!("[[server.keys]]\nkey = \"{}\"\nrole = \"read\"\n", SECRET),
            vec![],
        ),
        (
            format!("[[server.keys]]\nkey = \"{SECRET}{SECRET}\"\nrole = \"root\"\n"),
            vec![],
        ),
        (
            format!(
                "[[server.keys]]\nkey = \"{SECRET}{SECRET}\"\nkey_env = \"K\"\nrole = \"read\"\n"
            ),
            vec![],
        ),
        (
            format!("[[server.keys]]\nkey = \"{SECRET}\" role = \"read\"\n"),
            vec![],
        ),
    ];
    for (config, env) in &cases {
        for command in ["check-config", "serve"] {
            let (output, code) = run(dir.path(), command, config, env);
            assert_eq!(code, Some(2), "{command} {config:?} {env:?}: {output}");
            assert!(output.contains("herald"), "{output}");
            for fragment in fragments() {
                assert!(
                    !output.contains(fragment),
                    "{command} with {config:?} {env:?} printed `{fragment}`:\n{output}"
                );
            }
        }
    }
}
