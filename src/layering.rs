//! A test of the source tree's shape: the modules form layers, with no
//! import circle between files nor between top-level modules, so the tree
//! can be read from the bottom up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`store::log`) → its source text, without test code.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let module = match parts.as_slice() {
                [only] if only == "lib" => "crate".to_owned(),
                [only] if only == "main" => continue,
                _ => parts.join("::"),
            };
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            out.insert(module, without_tests(&text));
        }
    }
    // Files compiled only for tests may reach anywhere.
    let test_only: Vec<String> = out
        .iter()
        .flat_map(|(module, text)| {
            let prefix = if module == "crate" {
                String::new()
            } else {
                format!("{module}::")
            };
            text.split("#[cfg(test)]")
                .skip(1)
                .filter_map(|after| {
                    let after = after.trim_start();
                    let name = after.strip_prefix("mod ")?.split(';').next()?;
                    (!name.contains('{')).then(|| format!("{prefix}{}", name.trim()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for module in test_only {
        out.remove(&module);
    }
    out
}

/// The text up to a `#[cfg(test)] mod tests {` block.
fn without_tests(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// Every path named in `text` that starts with `crate::`, `super::` or
/// `self::`, with `use` groups (`a::{b, c::d}`) spelled out.
fn paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` statements start a line; the word elsewhere is prose.
    let mut rest = text;
    while let Some(at) = [rest.find("\nuse "), rest.find("\npub use ")]
        .into_iter()
        .flatten()
        .min()
    {
        let statement = &rest[at + 1..];
        let statement = statement
            .strip_prefix("pub ")
            .unwrap_or(statement)
            .trim_start_matches("use ");
        let end = statement.find(';').unwrap_or(statement.len());
        let tree: String = statement[..end].split_whitespace().collect();
        expand("", &tree, &mut out);
        rest = &statement[end..];
    }
    let bytes = text.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in text.match_indices(start) {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_owned());
        }
    }
    out.retain(|p| p.starts_with("crate") || p.starts_with("super") || p.starts_with("self"));
    out
}

/// Spells out a `use` tree below `prefix`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let joined = |rest: &str| {
        if prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{prefix}::{rest}")
        }
    };
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        out.push(joined(path.trim_end_matches("::self")));
        return;
    };
    let head = joined(tree[..open].trim_end_matches("::"));
    let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&head, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&head, &inner[start..], out);
    }
}

/// The module a path names, given the module it is written in.
fn resolve(from: &str, path: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    let mut base: Vec<&str> = if from == "crate" {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match parts.first() {
        Some(&"crate") => base.clear(),
        Some(&"super") => {
            base.pop();
            while parts.get(1) == Some(&"super") {
                parts.remove(0);
                base.pop();
            }
        }
        Some(&"self") => {}
        _ => return None,
    }
    parts.remove(0);
    (0..=parts.len()).rev().find_map(|n| {
        let candidate = [base.as_slice(), &parts[..n]].concat().join("::");
        let candidate = if candidate.is_empty() {
            "crate".to_owned()
        } else {
            candidate
        };
        modules.contains_key(&candidate).then_some(candidate)
    })
}

/// A circle in `edges`, if there is one.
fn find_circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circle_between_files_or_top_level_modules() {
    let modules = sources();
    assert!(modules.contains_key("store::log"), "the tree was not read");
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &modules {
        if module == "crate" {
            continue;
        }
        for path in paths(text) {
            let Some(target) = resolve(module, &path, &modules) else {
                continue;
            };
            if &target == module || target == "crate" {
                continue;
            }
            files
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
            if top(module) != top(&target) {
                tops.entry(top(module)).or_default().insert(top(&target));
            }
        }
    }
    assert!(
        files
            .get("store::log")
            .is_some_and(|t| t.contains("store::due")),
        "imports were not read: {files:?}"
    );
    assert_eq!(find_circle(&files), None, "a circle between files");
    assert_eq!(
        find_circle(&tops),
        None,
        "a circle between top-level modules"
    );
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    let circle = find_circle(&edges).expect("a → b → c → a");
    assert_eq!(circle.first(), circle.last());
    assert_eq!(circle.len(), 4);
}
